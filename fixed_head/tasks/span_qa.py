"""Extractive question answering (SQuAD v1.1): start and end logits over each token."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from fixed_head.nn import BertForSpanQA
from fixed_head.tasks.base import Task, safe_count
from fixed_head.tasks.bert_pretraining import class_stats


class SpanQA(Task):
  """Batch: tokens, token_types, input_mask [b, n]; start_position, end_position [b]
  (0, the [CLS] token, when the answer is not inside this window); weight [b].

  The objective is Google BERT's: the mean of the start and end cross entropies over the n
  positions. Metrics: loss, start_accuracy, end_accuracy (exact position). Answers and the
  SQuAD scores come from the 'squad' evaluator, which uses ``predict``.
  """

  NAME = 'span_qa'
  MODEL_TYPE = 'bert'
  PRETRAINED = ('encoder',)
  BATCH_KEYS = ('tokens', 'token_types', 'input_mask', 'start_position', 'end_position',
                'weight')
  PROGRESS = ('loss', 'start_accuracy', 'end_accuracy')

  def build_model(self, rngs: nnx.Rngs) -> BertForSpanQA:
    return BertForSpanQA(self.model_config, rngs=rngs, attention_op=self.attention_op)

  def stats(self, model, batch, *, deterministic=True, rngs=None):
    start, end = model(batch['tokens'], token_types=batch['token_types'],
                       input_mask=batch['input_mask'], deterministic=deterministic, rngs=rngs)
    return self.span_stats(start, end, batch)

  def span_stats(self, start, end, batch):
    """The sums of ``stats`` from start and end logits [b, n] already computed."""
    weight = batch['weight'].astype(jnp.float32)
    return {**class_stats(start, batch['start_position'], weight, 'start_'),
            **class_stats(end, batch['end_position'], weight, 'end_')}

  def objective(self, stats):
    return self.metrics(stats)['loss']

  def metrics(self, stats):
    count = safe_count(stats['start_weight_sum'])
    return {'loss': (stats['start_nll_sum'] + stats['end_nll_sum']) / (2.0 * count),
            'start_accuracy': stats['start_correct_sum'] / count,
            'end_accuracy': stats['end_correct_sum'] / count}

  def predict(self, model, batch):
    start, end = model(batch['tokens'], token_types=batch['token_types'],
                       input_mask=batch['input_mask'])
    return {'start_logits': start, 'end_logits': end}
