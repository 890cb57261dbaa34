"""The paper's models as Flax NNX modules, and their building blocks.

``attention``: multi-head attention with a head size d_p chosen on its own (the paper's
idea); ``attention_op``: the product softmax(Q K^T / sqrt(d_p)) V and its implementations;
``masks``: what may attend to what. ``layers``: the Transformer block and stack.
``transformer``: the LM1B language model. ``bert``: the BERT encoder with its pre-training
and fine-tuning heads. ``axes``: the logical axis names every parameter carries. Nothing
here imports training or data code.
"""

from __future__ import annotations

from flax import nnx

from fixed_head.config import ModelConfig
from fixed_head.nn.bert import (BertEncoder, BertForClassification, BertForPreTraining,
                                BertForSpanQA, EncoderOutput, MaskedLMHead)
from fixed_head.nn.transformer import TransformerLM

__all__ = ['BertEncoder', 'BertForClassification', 'BertForPreTraining', 'BertForSpanQA',
           'EncoderOutput', 'MaskedLMHead', 'TransformerLM', 'MODELS', 'build_model']

MODELS: dict[str, type[nnx.Module]] = {
    'lm': TransformerLM,
    'bert': BertForPreTraining,
}


def build_model(config: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Module:
  """The model named by ``config.model_type``: 'lm' -> TransformerLM, 'bert' ->
  BertForPreTraining (the fine-tuning models are built by their tasks)."""
  config = ModelConfig.from_mapping(config)
  return MODELS[config.model_type](config, rngs=rngs)
