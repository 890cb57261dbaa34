"""The task's own metrics over one pass of an evaluation split (``type`` 'lm',
'pretraining' or 'classification'), and what every evaluator shares: its data and options.

Each evaluator has its own data: ``config.data`` with the evaluator's ``data`` option laid
over it, so MNLI's two validation sets are two evaluators that differ in
``data.eval_split``, and an evaluator may read a corpus the run never trains on. It reads
with the run's tokenizer (``fixed_head.data.vocab``), so its ``data`` may not change the
fields that choose it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import numpy as np
from jax.sharding import Mesh

from fixed_head import data as data_lib
from fixed_head.errors import UsageError
from fixed_head.nn import axes
from fixed_head.tasks import losses


def evaluator_data(data_config: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
  """The data config an evaluator reads: ``config.data`` updated by ``spec['data']``."""
  base = data_config.to_dict() if hasattr(data_config, 'to_dict') else dict(data_config)
  override = spec.get('data') or {}
  override = override.to_dict() if hasattr(override, 'to_dict') else dict(override)
  return {**base, **override}


def add_sums(totals: dict[str, Any], stats: Mapping[str, Any]) -> None:
  """Adds a batch's stats (sums, on device) into ``totals``: floats, or float64 arrays for
  stats with a shape (the LM's sums per position bin)."""
  for key, value in jax.device_get(stats).items():
    value = np.asarray(value, np.float64)
    totals[key] = totals.get(key, 0.0) + (float(value) if value.ndim == 0 else value)


def on_mesh(fn: Callable, mesh: Mesh | None) -> Callable:
  """``fn`` traced under ``mesh`` (``axes.traced_on``), or ``fn`` itself without one."""
  return fn if mesh is None else axes.traced_on(mesh, fn)


def stats_step(task, model_of: Callable, mesh: Mesh | None = None) -> Callable:
  """The jitted evaluation step ``(params, batch) -> the task's stats (sums)``, traced under
  ``mesh`` when given."""
  return jax.jit(on_mesh(lambda params, batch: task.stats(model_of(params), batch), mesh))


class TaskEvaluator:
  """The task's metrics (``Task.eval_metrics``) on one deterministic pass over a split.

  Options: split ('eval'), num_examples (rows scored; None, the default, scores the whole
  split), batch_size (global; a last partial batch is padded with rows that count
  nothing), data (fields of config.data to change for this evaluator). The result also
  says how many rows it scored (``num_rows``).
  """

  TASKS: ClassVar[tuple[str, ...]] = ()  # the tasks whose models it can evaluate
  OPTIONS: ClassVar[dict[str, Any]] = {'type': None, 'split': 'eval', 'num_examples': None,
                                       'batch_size': 64, 'data': None}

  @classmethod
  def check_options(cls, prefix: str, spec: Mapping[str, Any], task_name: str) -> None:
    unknown = sorted(set(spec) - set(cls.OPTIONS))
    if unknown:
      raise UsageError(f'{prefix}: unknown option(s) {unknown}; known: {sorted(cls.OPTIONS)}.')
    if task_name not in cls.TASKS:
      raise UsageError(f'{prefix}.type={spec["type"]!r} evaluates tasks {list(cls.TASKS)}, not '
                       f'config.task.name={task_name!r}; choose another evaluator type.')
    for field in ('num_examples', 'batch_size'):
      value = spec.get(field, cls.OPTIONS[field])
      if field == 'num_examples' and value is None:
        continue
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f'{prefix}.{field}={value!r}: must be a positive integer'
                         + (' (or None: the whole split).' if field == 'num_examples' else '.'))
    data = spec.get('data')
    if data is not None and not hasattr(data, 'items'):
      raise UsageError(f'{prefix}.data={data!r}: must be a dict of config.data fields to '
                       'change for this evaluator, e.g. dict(eval_split="validation").')
    changed = {k for k, _ in data.items()} if data is not None else set()
    fixed = sorted(changed & {'name', 'vocab_size', 'tokenizer', 'tokenizer_path', 'vocab',
                              'lower_case'})
    if fixed:
      raise UsageError(f'{prefix}.data sets {fixed}: an evaluator reads the run\'s own data '
                       'source with the run\'s tokenizer; change those in config.data.')

  def __init__(self, spec: Mapping[str, Any], data_config: Mapping[str, Any], task,
               model_of: Callable, put_batch: Callable, *, tokenizer=None,
               process_index: int = 0, process_count: int = 1, replicated=None):
    """model_of(params) -> the nnx model; put_batch(local numpy batch) -> global arrays;
    tokenizer: the run's (``fixed_head.data.vocab.for_run``; None for synthetic data)."""
    options = {**self.OPTIONS, **dict(spec)}
    self.options = options
    self.split = options['split']
    self.batch_size = options['batch_size']
    self.num_examples = options['num_examples']
    self.task = task
    self.source = data_lib.build_source(evaluator_data(data_config, options), self.split,
                                        num_examples=self.num_examples, tokenizer=tokenizer)
    self.put_batch = put_batch
    self.model_of = model_of
    self.replicated = replicated
    self.mesh = getattr(replicated, 'mesh', None)  # traced under it (axes.traced_on)
    self.process_index, self.process_count = process_index, process_count
    self._stats = stats_step(task, model_of, self.mesh)

  def batches(self):
    """This process's part of each evaluation batch, the first checked against the task."""
    for i, local in enumerate(data_lib.eval_batches(
        self.source, self.batch_size, self.num_examples, process_index=self.process_index,
        process_count=self.process_count)):
      if i == 0:
        self.task.check_batch(local, f'the data of evaluator type {self.options["type"]!r}')
      yield local

  def __call__(self, params) -> dict[str, float]:
    totals: dict[str, Any] = {}
    for local in self.batches():
      add_sums(totals, self._stats(params, self.put_batch(local)))
    if not totals:
      raise UsageError(f'evaluator on split {self.split!r}: the split holds no rows.')
    return self.report(totals)

  def report(self, totals: dict[str, Any]) -> dict[str, float]:
    """The result of one pass from the stats summed over it."""
    result = self.task.eval_metrics(totals)
    result['num_rows'] = data_lib.num_eval_rows(self.source, self.num_examples)
    return result


class LMEvaluator(TaskEvaluator):
  """Next-token loss, perplexity and accuracy; on the synthetic language also the optimal
  loss and the gap to it. ``num_tokens`` says how many tokens were scored.

  In the same pass, the loss in bins of the target position t (the query predicting it
  sees t keys; ``fixed_head.tasks.losses``): ``loss_by_position/<bin>`` and
  ``tokens_by_position/<bin>`` for bins '1', '2-3', '4-7', ... Option ``position_bins``:
  None (powers of two) or the bins' lower edges, e.g. [1, 8, 32] for 1-7, 8-31, 32-(n-1).
  They go to metrics.jsonl and eval.py's JSON; the console line keeps the totals.
  """

  TASKS = ('lm',)
  OPTIONS = {**TaskEvaluator.OPTIONS, 'type': 'lm', 'position_bins': None}

  @classmethod
  def check_options(cls, prefix, spec, task_name):
    super().check_options(prefix, spec, task_name)
    edges = spec.get('position_bins')
    if edges is not None:
      try:
        losses.position_bins(1 << 62, edges)
      except (TypeError, ValueError):
        raise UsageError(f'{prefix}.position_bins={edges!r}: give the bins\' lower edges, '
                         'increasing integers from 1, e.g. [1, 8, 32] (or None: 1, 2, 4, ...).'
                         ) from None

  def __init__(self, spec, data_config, task, model_of, put_batch, **kwargs):
    super().__init__(spec, data_config, task, model_of, put_batch, **kwargs)
    seq_len = int(evaluator_data(data_config, self.options)['seq_len'])
    try:
      self.edges = losses.position_bins(seq_len, self.options['position_bins'])
    except ValueError as e:
      raise UsageError(f'evaluator type lm: {e}') from None
    self.labels = losses.position_bin_labels(self.edges, seq_len)
    self._stats = jax.jit(on_mesh(lambda params, batch: task.stats(
        model_of(params), batch, position_edges=self.edges), self.mesh))

  def report(self, totals: dict[str, Any]) -> dict[str, float]:
    nll, weight = totals.pop('nll_by_position'), totals.pop('weight_by_position')
    result = super().report(totals)
    for label, bin_nll, bin_weight in zip(self.labels, nll, weight):
      if bin_weight:  # a bin no target falls in has no loss
        result[f'loss_by_position/{label}'] = float(bin_nll / bin_weight)
      result[f'tokens_by_position/{label}'] = int(bin_weight)
    return result


class PretrainingEvaluator(TaskEvaluator):
  """Masked-LM loss, accuracy and perplexity, and next-sentence loss and accuracy."""

  TASKS = ('bert_pretraining',)
  OPTIONS = {**TaskEvaluator.OPTIONS, 'type': 'pretraining'}


class ClassificationEvaluator(TaskEvaluator):
  """Accuracy and mean nll of a classifier (MNLI matched or mismatched)."""

  TASKS = ('classification',)
  OPTIONS = {**TaskEvaluator.OPTIONS, 'type': 'classification'}
