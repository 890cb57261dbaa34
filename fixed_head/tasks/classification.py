"""Sentence-pair classification (MNLI): a classifier on BERT's pooled [CLS] output."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from fixed_head.errors import UsageError
from fixed_head.nn import BertForClassification
from fixed_head.tasks.base import Task, safe_count
from fixed_head.tasks.bert_pretraining import class_stats


class SentencePairClassification(Task):
  """Batch: tokens, token_types, input_mask [b, n]; label [b]; weight [b].

  Options: num_classes (MNLI: 3). Metrics: loss (mean nll), accuracy.
  """

  NAME = 'classification'
  MODEL_TYPE = 'bert'
  OPTIONS = {'num_classes': 3}
  PRETRAINED = ('encoder',)
  BATCH_KEYS = ('tokens', 'token_types', 'input_mask', 'label', 'weight')
  PROGRESS = ('loss', 'accuracy')

  @classmethod
  def check_options(cls, options):
    super().check_options(options)
    n = options.get('num_classes', cls.OPTIONS['num_classes'])
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
      raise UsageError(f'config.task.num_classes={n!r}: must be an integer >= 2.')

  def check_source(self, source, where='config.data'):
    super().check_source(source, where)
    classes = getattr(source, 'num_classes', None)
    if classes is not None and classes != self.options['num_classes']:
      raise UsageError(f'config.task.num_classes={self.options["num_classes"]} but {where} '
                       f'has {classes} classes; set them equal.')

  def build_model(self, rngs: nnx.Rngs) -> BertForClassification:
    return BertForClassification(self.model_config, num_classes=self.options['num_classes'],
                                 rngs=rngs, attention_op=self.attention_op)

  def stats(self, model, batch, *, deterministic=True, rngs=None):
    logits = model(batch['tokens'], token_types=batch['token_types'],
                   input_mask=batch['input_mask'], deterministic=deterministic, rngs=rngs)
    return class_stats(logits, batch['label'], batch['weight'].astype(jnp.float32), '')

  def objective(self, stats):
    return stats['nll_sum'] / safe_count(stats['weight_sum'])

  def metrics(self, stats):
    count = safe_count(stats['weight_sum'])
    return {'loss': stats['nll_sum'] / count, 'accuracy': stats['correct_sum'] / count}

  def predict(self, model, batch):
    return {'logits': model(batch['tokens'], token_types=batch['token_types'],
                            input_mask=batch['input_mask'])}
