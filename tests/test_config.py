"""ModelConfig validation: each bad field fails at once, naming itself."""

import pytest

from fixed_head.config import ModelConfig


@pytest.mark.parametrize('changes,message', [
    (dict(emb_dim=0), r'model.emb_dim=0: must be a positive integer'),
    (dict(num_layers=-1), r'model.num_layers=-1: must be a positive integer'),
    (dict(vocab_size=2.5), r'model.vocab_size=2.5: must be a positive integer'),
    (dict(num_heads=3), r'model.num_heads=3 does not divide model.emb_dim=256.*model.head_size'),
    (dict(head_size=0), r'model.head_size=0: must be a positive integer, or None'),
    (dict(norm='middle'), r"model.norm='middle': must be one of \('post', 'pre'\)"),
    (dict(model_type='gpt'), r"model.model_type='gpt': must be one of"),
    (dict(activation='tanh'), r"model.activation='tanh'"),
    (dict(attention_impl='flash'), r"model.attention_impl='flash'"),
    (dict(dropout_rate=1.0), r'model.dropout_rate=1.0: must lie in \[0, 1\)'),
    (dict(dtype='float16x'), r"model.dtype='float16x': is not a dtype name"),
    (dict(param_dtype='int32'), r"model.param_dtype='int32': must be a floating dtype"),
    (dict(position_embedding='rope'),
     r"model.position_embedding='rope': must be one of \('learned', 'sinusoidal'\)"),
    (dict(position_embedding='sinusoidal', emb_dim=25, num_heads=5),
     r"model.emb_dim=25: must be even for position_embedding='sinusoidal'"),
    (dict(scale_embeddings='yes'), r"model.scale_embeddings='yes': must be True or False"),
    (dict(attention_use_bias=1), r'model.attention_use_bias=1: must be True, False, or None'),
    (dict(mlp_dropout_rate=1.5), r'model.mlp_dropout_rate=1.5: must lie in \[0, 1\)'),
    (dict(kernel_init='he'), r"model.kernel_init='he': must be one of \('xavier_uniform', "),
    (dict(embed_init='xavier_uniform'),
     r"model.embed_init='xavier_uniform': must be one of \('normal', 'truncated_normal'\)"),
    (dict(kernel_init_std=0.0), r'model.kernel_init_std=0.0: must be positive'),
])
def test_invalid_fields_are_named(changes, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig(**changes)


def test_head_size_resolution():
  assert ModelConfig(emb_dim=256, num_heads=8).resolved_head_size == 32
  fixed = ModelConfig(emb_dim=256, num_heads=3, head_size=32)  # h need not divide d
  assert fixed.resolved_head_size == 32 and fixed.is_fixed_head
  assert not ModelConfig().is_fixed_head


def test_round_trip_through_a_dict():
  config = ModelConfig(emb_dim=64, num_heads=6, head_size=16)
  assert ModelConfig.from_mapping(config.to_dict()) == config
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['heads'\]"):
    ModelConfig.from_mapping({'heads': 4})
