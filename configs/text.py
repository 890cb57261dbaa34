r"""A small fixed-head LM on your own UTF-8 text files (one document per line by default).

  python train.py --config=configs/text.py --workdir=/tmp/fixed_head_text \
    --config.data.files='/path/to/corpus/*.txt'

Without --config.data.files it trains on this repository's README.md, a quick offline
check. Byte-level tokens by default; for a SentencePiece vocabulary add
``--config.data.tokenizer=sentencepiece --config.data.vocab_size=8000`` (the model reads its
vocabulary size from there): it is trained on the train documents the first time and
kept in ``WORKDIR/tokenizer/`` (or at ``--config.data.tokenizer_path``), reused after.
"""

from fixed_head.train import run_config

SEQ_LEN = 128  # n


def get_config(variant: str = 'fixed'):
  if variant not in ('fixed', 'baseline'):
    raise ValueError(f"configs/text.py:{variant}: use ':fixed' or ':baseline'.")
  c = run_config.defaults()
  c.num_train_steps = 300
  c.batch_size = 16

  c.data.name = 'text'  # fixed_head/data/text.py
  c.data.files = 'README.md'  # a glob
  c.data.doc_per = 'line'  # or 'file'
  c.data.seq_len = SEQ_LEN
  c.data.tokenizer = 'byte'  # or 'sentencepiece'
  c.data.tokenizer_path = ''  # SentencePiece model to read; '' = train into WORKDIR/tokenizer/
  c.data.vocab_size = 259  # bytes + pad, bos, eos
  c.data.eval_fraction = 0.05
  c.data.split_seed = 0
  c.data.shuffle_seed = 0
  c.data.packing_mode = 'pack'  # or 'pad': one document per row
  c.data.long_docs = 'split'  # or 'truncate' (counted in the log either way)

  m = c.model
  # One value each: the model reads the data's vocabulary and length (set either field).
  m.vocab_size = c.data.get_ref('vocab_size')
  m.max_len = c.data.get_ref('seq_len')
  m.emb_dim = 128
  m.num_heads = 8
  m.head_size = SEQ_LEN if variant == 'fixed' else None  # d_p = n, or d / h = 16
  m.num_layers = 2
  m.mlp_dim = 512
  m.norm = 'pre'

  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 50
  c.log_every_steps = 50
  c.eval_every_steps = 150
  c.checkpoint.every_steps = 150
  c.evals.valid = dict(type='lm', split='eval', num_examples=64, batch_size=8)
  return c
