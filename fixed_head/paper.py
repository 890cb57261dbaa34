"""The paper's model setups as ModelConfigs, and its published parameter counts.

docs/paper.md, "BERT pre-training and fine-tuning": 24 layers, 512 positions, feed-forward
width 4096 for d = 512 and d = 1024, 3072 for d = 768. The paper says "WordPiece vocabulary
30000"; Google BERT's released vocabulary (vocab.txt) has 30,522 entries, and with it every
published total rounds to the paper's million (with 30,000 three come out one million short).
Details follow Google BERT's modeling.py: GELU, post-LN with eps 1e-12, truncated-normal(0.02)
initialisation of every kernel and embedding table (``create_initializer``), and dropout after
the feed-forward output projection only, not after its activation.
"""

from __future__ import annotations

from fixed_head.config import ModelConfig

BERT_MLP_DIM = {512: 4096, 768: 3072, 1024: 4096}
BERT_VOCAB_SIZE = 30_522  # Google BERT's uncased WordPiece vocab.txt


def bert_config(emb_dim: int, num_heads: int, head_size: int | None = None,
                **overrides) -> ModelConfig:
  """The paper's 24-layer BERT at width d with h heads (head_size=None: baseline d / h)."""
  if emb_dim not in BERT_MLP_DIM and 'mlp_dim' not in overrides:
    raise ValueError(f'emb_dim={emb_dim}: the paper gives a feed-forward width only for '
                     f'd in {sorted(BERT_MLP_DIM)}; pass mlp_dim=... explicitly.')
  fields = dict(
      model_type='bert', vocab_size=BERT_VOCAB_SIZE, emb_dim=emb_dim, num_heads=num_heads,
      head_size=head_size, num_layers=24, mlp_dim=BERT_MLP_DIM.get(emb_dim), max_len=512,
      type_vocab_size=2, dropout_rate=0.1, attention_dropout_rate=0.1, mlp_dropout_rate=0.0,
      norm='post', activation='gelu', layer_norm_eps=1e-12, kernel_init='truncated_normal',
      kernel_init_std=0.02, embed_init='truncated_normal', embed_init_std=0.02)
  fields.update(overrides)
  return ModelConfig(**fields)


# (table, d, h, d_p or None for the baseline d / h, published parameter count).
PUBLISHED_BERT_PARAMS: tuple[tuple[str, int, int, int | None, int], ...] = (
    ('Table 1', 1024, 16, None, 336_000_000),
    ('Table 2A', 512, 8, 128, 168_000_000),
    ('Table 2A', 512, 12, 128, 193_000_000),
    ('Table 2A', 512, 16, 128, 218_000_000),
    ('Table 2A', 512, 32, 128, 319_000_000),
    ('Table 2B', 512, 8, 32, 130_000_000),
    ('Table 2B', 512, 8, 64, 142_000_000),
    ('Table 2B', 512, 8, 256, 218_000_000),
    ('Table 3', 768, 8, 128, 214_000_000),
    ('Table 3', 768, 12, 128, 252_000_000),
    ('Table 3', 768, 16, 128, 290_000_000),
    ('Table 3', 768, 20, 128, 327_000_000),
)
