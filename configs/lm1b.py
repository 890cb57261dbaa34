r"""The paper's LM1B language-modelling setup (PAPER.md, "LM1B language modelling").

  python train.py --config=configs/lm1b.py:fixed --workdir=DIR       # d=256, h=16, d_p=32
  python train.py --config=configs/lm1b.py:baseline --workdir=DIR    # d=256, h=8, d_p=d/h
  python train.py --config=configs/lm1b.py:fixed,h=64 --workdir=DIR
  python train.py --config=configs/lm1b.py:baseline,d=512,h=16 --workdir=DIR

The argument is the variant ('fixed' or 'baseline') followed by optional comma-separated
``d=`` (emb_dim), ``h=`` (num_heads) and, for 'fixed', ``dp=`` (head_size). The paper
compares d = 256..512 baselines (d_p = d / h) with d = 256 fixed-head models of d_p = 32
and h = 4..70.

Training follows the paper: 6 layers, feed-forward 1024, n = 256, batch 4096, 250k steps,
Adam (decoupled weight decay 0.01), tensor2tensor's learning rate 0.1 with 10k linear
warm-up and inverse-square-root decay (peak 1e-3), dropout 0.1. As in tensor2tensor's
Transformer the LayerNorm is pre-LN and the output embedding is tied; positions are
learned here (tensor2tensor used sinusoids).

Data: LM1B from TFDS through Grain (``data.name='tfds'``, fixed_head/data/tfds_text.py),
read from a prepared ArrayRecord copy (README "LM1B": ``tfds build lm1b
--file_format=array_record --data_dir=DIR`` once, with requirements-prepare.txt). Sentences
get bos/eos and are packed into rows of n = 256 with segment ids; the 32k SentencePiece
vocabulary is trained on the first 1M train sentences the first time and kept in
``WORKDIR/tokenizer/``. Evaluation reads the 'test' split (LM1B's held-out set). Point at
the data with ``--config.data.data_dir=DIR`` (default: $TFDS_DATA_DIR, else
~/tensorflow_datasets).
"""

from fixed_head import run_config

VARIANTS = {'fixed': dict(d=256, h=16, dp=32), 'baseline': dict(d=256, h=8, dp=None)}


def parse_arg(arg: str) -> tuple[str, dict]:
  variant, *pairs = arg.split(',')
  if variant not in VARIANTS:
    raise ValueError(f"configs/lm1b.py:{arg}: the variant must be 'fixed' or 'baseline'.")
  sizes = dict(VARIANTS[variant])
  for pair in pairs:
    key, _, value = pair.partition('=')
    if key not in ('d', 'h', 'dp') or not value.isdigit():
      raise ValueError(f"configs/lm1b.py:{arg}: '{pair}' is not d=<int>, h=<int> or dp=<int>.")
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
  c.batch_size = 4096

  c.data.name = 'tfds'  # fixed_head/data/tfds_text.py
  c.data.dataset = 'lm1b'
  c.data.feature = 'text'
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.data_dir = ''  # '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.seq_len = 256
  c.data.vocab_size = 32_000
  c.data.tokenizer = 'sentencepiece'
  c.data.tokenizer_path = ''  # '' = train into WORKDIR/tokenizer/ on first use
  c.data.tokenizer_max_sentences = 1_000_000
  c.data.shuffle_seed = 0
  c.data.packing_mode = 'pack'
  c.data.long_docs = 'split'

  m = c.model
  m.model_type = 'lm'
  m.vocab_size = 32_000
  m.max_len = 256
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
  c.eval_every_steps = 5_000
  c.checkpoint.every_steps = 5_000
  c.evals.valid = dict(type='lm', split='eval', num_examples=16_384, batch_size=512)
  return c
