"""Default run: a small fixed-head LM on the embedded synthetic copy language (no download).

  python train.py --config=configs/default.py --workdir=/tmp/fixed_head_default
  python train.py --config=configs/default.py:baseline --workdir=/tmp/fixed_head_baseline

The argument picks the attention: 'fixed' (default, d_p = n = seq_len) or 'baseline'
(d_p = d / h). Everything else is shared, so the two runs differ only in head size.
"""

from fixed_head.train import run_config

SEQ_LEN = 32  # n


def get_config(variant: str = 'fixed'):
  if variant not in ('fixed', 'baseline'):
    raise ValueError(f"configs/default.py:{variant}: use ':fixed' or ':baseline'.")
  c = run_config.defaults()
  c.seed = 0
  c.num_train_steps = 1500
  c.batch_size = 64

  c.data.name = 'synthetic'  # fixed_head/data/synthetic.py: a copy language (Theorem 1)
  c.data.seq_len = SEQ_LEN
  c.data.vocab_size = 32
  c.data.memory_len = 16  # m uniform tokens, then n - m copies of them
  c.data.support = 8  # each copy position draws from k = 8 random memory positions
  c.data.concentration = float('inf')  # equal weights over each row's support
  c.data.copy_prob = 0.95
  c.data.seed = 0  # the language itself (its context matrix A)

  m = c.model
  m.model_type = 'lm'
  m.vocab_size = c.data.vocab_size
  m.max_len = SEQ_LEN
  m.emb_dim = 64  # d
  m.num_heads = 8  # h
  m.head_size = SEQ_LEN if variant == 'fixed' else None  # d_p = n = 32, or d / h = 8
  m.num_layers = 1
  m.mlp_dim = 256
  m.dropout_rate = 0.0
  m.attention_dropout_rate = 0.0
  m.norm = 'post'

  c.optimizer.learning_rate = 1e-2
  c.optimizer.schedule = 'cosine'
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 0.0

  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.checkpoint.every_steps = 500
  c.evals.valid = dict(type='lm', split='eval', num_examples=1024, batch_size=64)
  return c
