"""The trainer's train step as benchmarks/memory.py and cost_growth.py measure it: a run
config with a given batch and model, compiled once (``trainer.make_train_step``) on a
synthetic batch, its XLA memory plan, and a call that runs one step; and the flags both
scripts take for the run config and the model's shape."""

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from fixed_head.experiments import sweeps, timing
from fixed_head.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What a --quick smoke test compiles with: the optimisations of XLA's CPU code generator off.
# XLA compiles the same program with the same memory plan about 4x faster; the code is slower.
FAST_COMPILE = {'xla_backend_optimization_level': 0}
# The model of a --quick smoke test.
QUICK_MODEL = dict(num_layers=1, emb_dim=32, num_heads=4, mlp_dim=64, vocab_size=128)
MODEL_FLAGS = tuple(QUICK_MODEL)


def define_model_flags(config: str, *, num_layers: int, emb_dim: int, num_heads: int,
                       mlp_dim: int, vocab_size: int) -> None:
  """--config (configs/``config`` by default: the run whose recipe is measured) and the
  model's shape, with these defaults."""
  config_flags.DEFINE_config_file('config', os.path.join(REPO, 'configs', config),
                                  'Run config whose train step is measured (its recipe: '
                                  'optimizer, norm, dropout); the flags below set the shapes.')
  flags.DEFINE_integer('num_layers', num_layers, 'L.')
  flags.DEFINE_integer('emb_dim', emb_dim, 'd.')
  flags.DEFINE_integer('num_heads', num_heads, 'h.')
  flags.DEFINE_integer('mlp_dim', mlp_dim, 'Feed-forward width.')
  flags.DEFINE_integer('vocab_size', vocab_size, 'Vocabulary.')


def model_fields(f) -> dict[str, int]:
  """The model-shape flags' values, as ModelConfig fields."""
  return {name: getattr(f, name) for name in MODEL_FLAGS}


def apply_quick(f, **more) -> None:
  """With --quick, sets the model flags to QUICK_MODEL and the others to ``more``."""
  if f.quick:
    for name, value in {**QUICK_MODEL, **more}.items():
      setattr(f, name, value)


def run_config(base, batch_size: int, seq_len: int, **model):
  """A copy of the run config ``base`` with a batch of ``batch_size`` rows of ``seq_len``
  tokens and the model fields ``model`` (max_len = seq_len)."""
  c = base.copy_and_resolve_references()
  c.model.update(dict(model, max_len=seq_len))
  c.data.seq_len = seq_len
  c.batch_size, c.batch_tokens = batch_size, None
  for spec in c.evals.values():
    spec['batch_size'] = min(spec['batch_size'], batch_size)
  return c


def synthetic_batch(config) -> dict[str, np.ndarray]:
  """A batch of ``config.batch_size`` rows of ``config.data.seq_len`` random tokens, shaped
  for the config's task: the LM's (one document a row) or BERT pre-training's
  (``data.max_predictions_per_seq`` masked positions a row, sentence B from the middle)."""
  rows, n, vocab = config.batch_size, config.data.seq_len, config.model.vocab_size
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab, (rows, n), np.int32)
  task = config.task.name if 'task' in config else 'lm'
  if task == 'lm':
    return {'tokens': tokens, 'segment_ids': np.ones((rows, n), np.int32),
            'positions': np.tile(np.arange(n, dtype=np.int32), (rows, 1))}
  if task == 'bert_pretraining':
    m = config.data.max_predictions_per_seq
    positions = np.sort(np.stack([rng.choice(np.arange(1, n), m, replace=False)
                                  for _ in range(rows)]), axis=1).astype(np.int32)
    return {'tokens': tokens,
            'token_types': (np.arange(n) >= n // 2).astype(np.int32)[None].repeat(rows, 0),
            'input_mask': np.ones((rows, n), np.int32),
            'masked_positions': positions,
            'masked_ids': np.take_along_axis(tokens, positions, axis=1),
            'masked_weights': np.ones((rows, m), np.float32),
            'nsp_label': rng.integers(0, 2, rows).astype(np.int32),
            'weight': np.ones(rows, np.float32)}
  raise ValueError(f"no synthetic batch for task {task!r}; 'lm' and 'bert_pretraining' have one.")


def load_config(spec: str):
  """The run config of ``file.py[:arg]``, ready to build (init_from placeholders cleared)."""
  path, arg = sweeps.split_arg(spec)
  path = path if os.path.isabs(path) else os.path.join(REPO, path)
  module = sweeps.load_module(path)
  config = module.get_config(arg) if arg else module.get_config()
  if 'init_from' in config:
    config.init_from = None  # a BERT stage-2 or fine-tuning config names its parent run
  return config


def shrink(config):
  """--quick: the same kind of model, tiny (1 layer, d = 32, n <= 32, vocab 512)."""
  m = config.model
  h = min(m.num_heads, 4)
  m.update(dict(emb_dim=32, num_heads=h, head_size=None if m.head_size is None else 16,
                num_layers=1, mlp_dim=64, vocab_size=512, max_len=min(m.max_len, 32)))
  config.data.seq_len = min(config.data.seq_len, 32)
  config.data.vocab_size = 512
  if 'max_predictions_per_seq' in config.data:
    config.data.max_predictions_per_seq = min(config.data.max_predictions_per_seq, 5)
  return config


class TrainStep:
  """The trainer's train step of run config ``config``, compiled once, on a fixed synthetic
  batch (one packed document a row). Calling it runs a step and returns its metrics;
  ``compiled`` has XLA's memory plan. ``like``: a TrainStep of a config with the same
  parameters and optimizer, whose initial state is copied instead of compiling init again."""

  def __init__(self, config, like: 'TrainStep | None' = None,
               compiler_options: dict | None = None):
    setup = trainer.build_setup(config)
    batch = synthetic_batch(config)
    self.initial_state = (trainer.init_state(setup) if like is None else
                          jax.tree.map(jnp.copy, like.initial_state))
    self.state = jax.tree.map(jnp.copy, self.initial_state)  # the step donates it
    self.batch = setup.put_batch(batch)
    step = trainer.make_train_step(setup, batch)
    self.compiled = step.lower(self.state, self.batch).compile(compiler_options)

  def __call__(self):
    self.state, metrics = self.compiled(self.state, self.batch)
    return metrics

  def peak_bytes(self) -> int | None:
    return timing.peak_bytes(self.compiled)

  def temp_bytes(self) -> int | None:
    analysis = self.compiled.memory_analysis()
    return None if analysis is None else analysis.temp_size_in_bytes
