"""Evaluators chosen by the config, as in big_vision: ``config.evals = {name: {type, ...}}``.

The same evaluators run during training (every ``eval_every_steps``) and in ``eval.py``.
Each one is built once (its step compiled once), reads its own data (``config.data`` with
its ``data`` option laid over it, with the run's tokenizer) and is then called with
parameters.

  'lm'              next-token loss, perplexity, accuracy          (task 'lm')
  'pretraining'     masked-LM and next-sentence loss and accuracy  (task 'bert_pretraining')
  'classification'  accuracy (MNLI matched / mismatched)          (task 'classification')
  'squad'           SQuAD v1.1 exact match and F1                  (task 'span_qa')

A new evaluator is a new file here and one line in ``EVALUATORS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fixed_head.evaluators.common import (ClassificationEvaluator, LMEvaluator,
                                          PretrainingEvaluator, TaskEvaluator, evaluator_data)
from fixed_head.evaluators.squad import SquadEvaluator

EVALUATORS: dict[str, type[TaskEvaluator]] = {
    'lm': LMEvaluator,
    'pretraining': PretrainingEvaluator,
    'classification': ClassificationEvaluator,
    'squad': SquadEvaluator,
}

__all__ = ['EVALUATORS', 'build_evaluators', 'evaluator_data']


def build_evaluators(config, task, model_of: Callable, put_batch: Callable, *,
                     tokenizer=None, process_index: int = 0, process_count: int = 1,
                     replicated=None) -> dict[str, Any]:
  """One evaluator per entry of ``config.evals``, each reading with the run's
  ``tokenizer``."""
  return {
      name: EVALUATORS[spec['type']](
          spec, config.data, task, model_of, put_batch, tokenizer=tokenizer,
          process_index=process_index, process_count=process_count, replicated=replicated)
      for name, spec in config.evals.items()
  }
