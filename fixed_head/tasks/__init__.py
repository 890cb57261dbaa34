"""Tasks: what one trainer trains, chosen by ``config.task.name`` (see ``base.Task``).

  'lm'                next-token language modelling (LM1B, the synthetic language, text files)
  'bert_pretraining'  masked LM + next-sentence prediction
  'classification'    sentence-pair classification on BERT's [CLS] output (MNLI)
  'span_qa'           start/end span prediction (SQuAD v1.1)

A new task is a new file here with a ``Task`` subclass, one line in ``TASKS`` and a config.
"""

from __future__ import annotations

from fixed_head.config import ModelConfig
from fixed_head.errors import UsageError
from fixed_head.tasks.base import Task
from fixed_head.tasks.bert_pretraining import BertPretraining
from fixed_head.tasks.classification import SentencePairClassification
from fixed_head.tasks.lm import LanguageModelling
from fixed_head.tasks.span_qa import SpanQA

TASKS: dict[str, type[Task]] = {
    'lm': LanguageModelling,
    'bert_pretraining': BertPretraining,
    'classification': SentencePairClassification,
    'span_qa': SpanQA,
}

__all__ = ['TASKS', 'Task', 'build_task', 'check_task']


def check_task(config) -> type[Task]:
  """The task class of ``config.task``, after checking its options and that config.model
  is the model it trains; UsageError naming the field otherwise."""
  task_config = config.task
  name = task_config.get('name')
  if name not in TASKS:
    raise UsageError(f'config.task.name={name!r}: not one of {sorted(TASKS)}.')
  cls = TASKS[name]
  cls.check_options(task_config)
  model_type = getattr(config.model, 'model_type', None)
  if model_type != cls.MODEL_TYPE:
    raise UsageError(f'config.model.model_type={model_type!r}: task {name!r} trains '
                     f'{cls.MODEL_TYPE!r} models; set --config.model.model_type='
                     f'{cls.MODEL_TYPE}.')
  return cls


def build_task(config, model_config: ModelConfig, attention_op=None) -> Task:
  """The task object of a (validated) run config; ``attention_op`` (an AttentionOp) for
  its models' attention, if not the one config.model.attention_impl makes."""
  return check_task(config)(dict(config.task), model_config, attention_op)
