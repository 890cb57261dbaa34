"""BERT pre-training: masked-LM plus next-sentence prediction (Google BERT's
run_pretraining.py). The objective is the mean nll over the masked positions plus the mean
NSP nll over the rows."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from fixed_head.nn import BertForPreTraining
from fixed_head.tasks import losses
from fixed_head.tasks.base import Task, safe_count


def class_stats(logits, labels, weights, prefix: str) -> dict:
  """Sums of nll, correct predictions and weights of logits [..., C] against int labels
  [...], each position weighted by weights [...] (0 = not counted)."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
  correct = losses.is_argmax(logits, labels).astype(jnp.float32)
  return {f'{prefix}nll_sum': jnp.sum(nll * weights),
          f'{prefix}correct_sum': jnp.sum(correct * weights),
          f'{prefix}weight_sum': jnp.sum(weights)}


class BertPretraining(Task):
  """Batch: tokens, token_types, input_mask [b, n]; masked_positions, masked_ids,
  masked_weights [b, m]; nsp_label [b] (1 = B is a random sentence); weight [b].

  Metrics: loss (mlm_loss + nsp_loss), mlm_loss, mlm_accuracy, nsp_loss, nsp_accuracy.
  """

  NAME = 'bert_pretraining'
  MODEL_TYPE = 'bert'
  BATCH_KEYS = ('tokens', 'token_types', 'input_mask', 'masked_positions', 'masked_ids',
                'masked_weights', 'nsp_label', 'weight')
  PROGRESS = ('loss', 'mlm_accuracy', 'nsp_accuracy')

  def build_model(self, rngs: nnx.Rngs) -> BertForPreTraining:
    return BertForPreTraining(self.model_config, rngs=rngs,
                              attention_op=self.attention_op)

  def stats(self, model, batch, *, deterministic=True, rngs=None):
    out = model(batch['tokens'], token_types=batch['token_types'],
                input_mask=batch['input_mask'], masked_positions=batch['masked_positions'],
                deterministic=deterministic, rngs=rngs)
    row_weight = batch['weight'].astype(jnp.float32)
    mlm_weights = batch['masked_weights'].astype(jnp.float32) * row_weight[:, None]
    return {**class_stats(out.mlm_logits, batch['masked_ids'], mlm_weights, 'mlm_'),
            **class_stats(out.nsp_logits, batch['nsp_label'], row_weight, 'nsp_')}

  def objective(self, stats):
    return self.metrics(stats)['loss']

  def metrics(self, stats):
    mlm_count, nsp_count = safe_count(stats['mlm_weight_sum']), safe_count(stats['nsp_weight_sum'])
    mlm_loss, nsp_loss = stats['mlm_nll_sum'] / mlm_count, stats['nsp_nll_sum'] / nsp_count
    return {'loss': mlm_loss + nsp_loss, 'mlm_loss': mlm_loss,
            'mlm_accuracy': stats['mlm_correct_sum'] / mlm_count, 'nsp_loss': nsp_loss,
            'nsp_accuracy': stats['nsp_correct_sum'] / nsp_count}

  def eval_metrics(self, totals):
    result = super().eval_metrics(totals)
    result['mlm_perplexity'] = math.exp(min(result['mlm_loss'], 700.0))
    result['num_predictions'] = int(totals['mlm_weight_sum'])
    return result
