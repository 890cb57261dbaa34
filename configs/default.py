"""Default run: a small fixed-head LM on the embedded synthetic copy language (no download).

  python train.py --config=configs/default.py --workdir=/tmp/fixed_head_default
  python train.py --config=configs/default.py:baseline --workdir=/tmp/fixed_head_baseline

The argument picks the attention: 'fixed' (default, d_p = n = seq_len) or 'baseline'
(d_p = d / h). Everything else is shared, so the two runs differ only in head size.

``sweep()`` below lists the runs behind RESULTS.md's figures (three seeds each, 78 runs, about
25 minutes on an idle 2-core CPU; ``:heads`` alone is 36 of them):

  python sweep.py --config=configs/default.py --workdir=/tmp/sweeps/synthetic
  python report.py --workdir=/tmp/sweeps/synthetic
"""

from fixed_head import accounting
from fixed_head.config import ModelConfig
from fixed_head.experiments import sweeps
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
  c.data.language_seed = 0  # the language itself (its context matrix A) and its examples

  m = c.model
  m.model_type = 'lm'
  # One value each: the model reads the data's vocabulary and length (set either field).
  m.vocab_size = c.data.get_ref('vocab_size')
  m.max_len = c.data.get_ref('seq_len')
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


SEEDS = (0, 1, 2)
HEADS = (1, 2, 4, 8, 16, 32)  # h; the bottleneck starts above d / n = 2


def sweep(arg: str = 'all'):
  """The runs of each figure, on the base model above (d = 64, n = 32), same steps and
  optimiser for every run.

  heads:     baseline (d_p = d / h) and fixed (d_p = n = 32) against h        (paper Fig. 3a)
  head_size: fixed heads of size 4 .. 64 at h = 2 and h = 8                   (paper Fig. 3b)
  width:     baselines whose head size is held at 32 by growing d = 32 h      (paper Fig. 4)
  params:    baselines of width 128 and 256 (h = 8) and the d = 64 fixed-head
             models with as many parameters (accounting.match_num_heads)      (paper Fig. 1)
  """
  base = get_config('baseline')
  d = base.model.emb_dim
  runs = []
  for seed in SEEDS:  # every figure's first seed, then the next: early results are complete

    def add(variant, figure, emb_dim=d, **model):
      runs.append(sweeps.model_run(variant, figure, seed=seed, emb_dim=emb_dim, **model))

    for h in HEADS:
      add('baseline', 'heads', num_heads=h)
      add('fixed', 'heads', num_heads=h)
    for h in (2, 8):
      for d_p in (4, 8, 16, 32, 64):
        add('fixed', 'head_size', num_heads=h, head_size=d_p)
    for h in (1, 2, 4, 8):
      add('baseline', 'width', emb_dim=SEQ_LEN * h, num_heads=h)
    add('baseline', 'params', num_heads=8)
    add('fixed', 'params', num_heads=8)
    for width in (128, 256):
      add('baseline', 'params', emb_dim=width, num_heads=8)
      wide = ModelConfig.from_mapping(base.model).replace(emb_dim=width)
      add('fixed', 'params', num_heads=accounting.match_num_heads(wide, SEQ_LEN, emb_dim=d))
  return sweeps.select(runs, arg, ('heads', 'head_size', 'width', 'params'),
                       'configs/default.py')
