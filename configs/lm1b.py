r"""The paper's LM1B language-modelling setup (docs/paper.md, "LM1B language modelling").

  python train.py --config=configs/lm1b.py:fixed --workdir=DIR       # d=256, h=16, d_p=32
  python train.py --config=configs/lm1b.py:baseline --workdir=DIR    # d=256, h=8, d_p=d/h
  python train.py --config=configs/lm1b.py:fixed,h=64 --workdir=DIR
  python train.py --config=configs/lm1b.py:baseline,d=512,h=16 --workdir=DIR
  python train.py --config=configs/lm1b.py:fixed,recipe=t2t --workdir=DIR
  python train.py --config=configs/lm1b.py:fixed,runlocal --workdir=DIR   # a minute on a CPU

The argument is the variant ('fixed' or 'baseline') followed by optional comma-separated ``d=``
(emb_dim), ``h=`` (num_heads), for 'fixed' ``dp=`` (head_size), ``recipe=`` ('ours', the
default, or 't2t') and ``runlocal``. The paper compares d = 256..512 baselines (d_p = d / h)
with d = 256 fixed-head models of d_p = 32 and h = 4..70.

What the paper states, in both recipes: 6 layers, feed-forward 1024, n = 256, 250k steps,
Adam, learning rate 0.1 with 10k linear warm-up steps then inverse-square-root decay, weight
decay 0.01, dropout 0.1, tensor2tensor (T2T) on 4 TPUv2 chips.

Batch. The paper's "batch 4096" is T2T's ``batch_size``, which counts tokens per core: on a
TPU ``tpu_batch_size_per_shard = batch_size // max_length`` = 4096 // 256 = 16 rows per
core, and 4 TPUv2 chips have 8 cores, so a step is 8 x 16 = 128 rows = 32,768 tokens. The
config gives it in tokens, as T2T does (``batch_tokens=32_768``, ``batch_size=None``);
``run_config.resolve`` turns it into 128 rows of n = 256 before training. Give another batch
in tokens (``--config.batch_tokens=65536``) or in rows (``--config.batch_tokens=None
--config.batch_size=256``); both at once must agree. 250k steps then read about 8.2B tokens,
some 10 passes over LM1B's ~0.8B training tokens.

Learning rate. "0.1 with 10k warm-up and inverse-square-root decay" fits several T2T
schedules. We take T2T's ``constant*linear_warmup*rsqrt_decay`` with constant 0.1 ('rsqrt'
here): 0.1 * min(1, s/10k) / sqrt(max(s, 10k)), peaking at 1e-3 at step 10k whatever the
width. T2T's ``transformer_base`` multiplies that by ``rsqrt_hidden_size`` (d^-0.5): the
Transformer paper's formula, 'noam' here, 0.1 * d^-0.5 * min(s / 10k^1.5, s^-0.5), which
peaks at 6.25e-5 for d = 256 (and lower for wider baselines, which would then differ in
learning rate too): ``--config.optimizer.schedule=noam``. T2T's older
``learning_rate_decay_scheme='noam'`` (``transformer_base_v1``, whose ``learning_rate`` is
0.1) is the same formula times 5000 * 0.002 (its Adam correction) = 10, a peak of 6.25e-4
at d = 256: ``--config.optimizer.schedule=noam --config.optimizer.learning_rate=1.0``.

recipe=ours (default) differs from T2T in a few modelling details, each a choice that is
common in JAX codebases: learned position embeddings, embeddings N(0, 0.02^2) unscaled,
biases in the attention projections, AdamW (decoupled weight decay), beta2 = 0.98, no label
smoothing. recipe=t2t follows T2T's ``transformer`` LM as far as the paper implies, with
T2T's names cited beside each line below; kernels are Glorot-uniform in both (T2T's
``uniform_unit_scaling`` initializer: variance scaling, fan_avg, uniform). Pre-LN with a
final LayerNorm (T2T's layer_preprocess 'n' / postprocess 'da') and the output layer tied to
the token embedding (``shared_embedding_and_softmax_weights``) are common to both. Parameter
counts follow the recipe (no position table and no attention biases in 't2t').

Data: LM1B from TFDS through Grain (``data.name='tfds'``, fixed_head/data/tfds_text.py),
read from a prepared ArrayRecord copy (``python prepare.py lm1b
--data_dir=DIR`` once, with requirements-prepare.txt; docs/data.md). Sentences
get bos/eos and are packed into rows of n = 256 with segment ids; the 32k SentencePiece
vocabulary is trained on the first 1M train sentences the first time and kept in
``WORKDIR/tokenizer/``. Evaluation scores the whole 'test' split (LM1B's held-out set) and
reports how many tokens it scored. Point at the data with ``--config.data.data_dir=DIR``
(default: $TFDS_DATA_DIR, else ~/tensorflow_datasets). ``--config.data.prepacked_dir=DIR``
trains from a copy of the packed train rows made once with ``python
prepack.py`` (docs/data.md, "LM1B"), several times faster to read.

runlocal: the same code at toy size, to check a setup end to end in a minute on a CPU (the
numbers mean nothing), e.g. on an LM1B prepared from fake sources (``python
prepare.py lm1b --fake_sources --data_dir=DIR``): every width divided by 4
(d, d_p, feed-forward; h kept), 2 layers, n = 64, a 512-piece SentencePiece vocabulary, 8 rows
a step for 40 steps with 10 of warm-up, and 64 rows of the test split evaluated every 20.
"""

from fixed_head.train import run_config

VARIANTS = {'fixed': dict(d=256, h=16, dp=32), 'baseline': dict(d=256, h=8, dp=None)}
RECIPES = ('ours', 't2t')
SEQ_LEN = 256  # n: T2T's max_length for LM1B
TOKENS_PER_CORE = 4096  # the paper's "batch 4096": T2T's batch_size, tokens per core
ROWS_PER_CORE = TOKENS_PER_CORE // SEQ_LEN  # T2T tpu_batch_size_per_shard: 16 rows of 256
CORES = 8  # 4 TPUv2 chips x 2 cores
RUNLOCAL = dict(shrink=4, layers=2, seq_len=64, vocab_size=512, batch_size=8, steps=40)


def parse_arg(arg: str) -> tuple[str, dict]:
  """'fixed,h=64,recipe=t2t' -> ('fixed', {'d': 256, 'h': 64, 'dp': 32, 'recipe': 't2t',
  'runlocal': False})."""
  variant, *pairs = arg.split(',')
  if variant not in VARIANTS:
    raise ValueError(f"configs/lm1b.py:{arg}: the variant must be 'fixed' or 'baseline'.")
  sizes = dict(VARIANTS[variant], recipe='ours', runlocal=False)
  for pair in pairs:
    if pair == 'runlocal':
      sizes['runlocal'] = True
      continue
    key, _, value = pair.partition('=')
    if key == 'recipe':
      if value not in RECIPES:
        raise ValueError(f'configs/lm1b.py:{arg}: recipe must be one of {RECIPES}.')
      sizes['recipe'] = value
      continue
    if key not in ('d', 'h', 'dp') or not value.isdigit():
      raise ValueError(f"configs/lm1b.py:{arg}: '{pair}' is not d=<int>, h=<int>, dp=<int>, "
                       'recipe=ours|t2t or runlocal.')
    if key == 'dp' and variant == 'baseline':
      raise ValueError(f'configs/lm1b.py:{arg}: a baseline head size is d / h; use '
                       "the 'fixed' variant to choose dp.")
    sizes[key] = int(value)
  return variant, sizes


def get_config(arg: str = 'fixed'):
  variant, sizes = parse_arg(arg)
  c = run_config.defaults()
  c.seed = 0
  c.num_train_steps = 250_000
  # The batch in tokens, as T2T gives it: 8 cores x 16 rows x 256 = 32,768 tokens a step;
  # run_config.resolve derives batch_size = 32,768 // seq_len = 128 rows (see the docstring).
  c.batch_tokens = CORES * ROWS_PER_CORE * SEQ_LEN
  c.batch_size = None

  c.data.name = 'tfds'  # fixed_head/data/tfds_text.py
  c.data.dataset = 'lm1b'
  c.data.feature = 'text'
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.data_dir = ''  # '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.seq_len = SEQ_LEN
  c.data.vocab_size = 32_000
  c.data.tokenizer = 'sentencepiece'
  c.data.tokenizer_path = ''  # '' = train into WORKDIR/tokenizer/ on first use
  c.data.tokenizer_max_sentences = 1_000_000
  c.data.shuffle_seed = 0
  c.data.packing_mode = 'pack'
  c.data.long_docs = 'split'
  # '' = read and pack the dataset while training; a directory = read the rows from the
  # pre-packed copy there (python prepack.py, docs/data.md): no Python
  # per sentence, rows (not documents) shuffled each epoch.
  c.data.prepacked_dir = ''

  m = c.model
  m.model_type = 'lm'
  # One value each: the model reads the data's vocabulary and length (set either field).
  m.vocab_size = c.data.get_ref('vocab_size')
  m.max_len = c.data.get_ref('seq_len')
  m.emb_dim = sizes['d']
  m.num_heads = sizes['h']
  m.head_size = sizes['dp']
  m.num_layers = 6
  m.mlp_dim = 1024
  m.dropout_rate = 0.1
  m.attention_dropout_rate = 0.1
  m.norm = 'pre'
  m.activation = 'relu'
  m.tie_embeddings = True

  c.optimizer.update(dict(name='adamw', learning_rate=0.1, schedule='rsqrt',
                          warmup_steps=10_000, weight_decay=0.01, b1=0.9, b2=0.98, eps=1e-9,
                          grad_clip_norm=0.0))

  c.log_every_steps = 100
  # Every 5,000 steps (50 times a run) score the whole test split: ~307k sentences, some
  # 35-40k rows of 256, forward only: about 100 train steps' compute, 2% of 5,000 steps.
  c.eval_every_steps = 5_000
  c.checkpoint.every_steps = 5_000
  # Eval batch = the train batch (128 rows): a 512-row batch of 32k-vocabulary float32
  # logits is 17 GB, four times a training step's.
  c.evals.valid = dict(type='lm', split='eval', batch_size=CORES * ROWS_PER_CORE)

  if sizes['recipe'] == 't2t':
    d = sizes['d']
    m.position_embedding = 'sinusoidal'  # T2T add_timing_signal_1d: no position parameters
    m.embed_init = 'normal'  # T2T symbol modality: random_normal_initializer(0, d^-0.5) ...
    m.embed_init_std = d ** -0.5
    m.scale_embeddings = True  # ... times sqrt(d) (multiply_embedding_mode='sqrt_depth')
    m.attention_use_bias = False  # T2T common_attention: bias-free q/k/v/output dense layers
    m.mlp_dropout_rate = 0.1  # T2T relu_dropout (dense_relu_dense keeps its biases)
    c.optimizer.update(dict(
        name='adam', b1=0.9, b2=0.997, eps=1e-9,  # T2T transformer_base optimizer_adam_*
        weight_decay_mode='l2'))  # T2T: the gradient of weight_decay * sum(l2_loss), no biases
    c.task.label_smoothing = 0.1  # T2T transformer_base label_smoothing
  if sizes['runlocal']:
    _runlocal(c)
  return c


def _runlocal(c) -> None:
  """The toy-size run of the module docstring, in place."""
  shrink, m = RUNLOCAL['shrink'], c.model
  m.emb_dim //= shrink
  m.mlp_dim //= shrink
  if m.head_size is not None:
    m.head_size //= shrink
  m.num_layers = RUNLOCAL['layers']
  c.data.seq_len = RUNLOCAL['seq_len']  # and model.max_len, which reads it
  c.data.vocab_size = RUNLOCAL['vocab_size']  # and model.vocab_size
  c.batch_tokens = None
  c.batch_size = RUNLOCAL['batch_size']
  c.num_train_steps = RUNLOCAL['steps']
  c.optimizer.warmup_steps = RUNLOCAL['steps'] // 4
  c.log_every_steps = c.eval_every_steps = c.checkpoint.every_steps = RUNLOCAL['steps'] // 2
  c.evals.valid.update(dict(num_examples=64, batch_size=RUNLOCAL['batch_size']))
