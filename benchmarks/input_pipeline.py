r"""Input pipeline rows/s against the rows/s the compiled train step consumes.

Times this process's train iterator (``fixed_head.data.train_iterator``: read, tokenise,
pack, batch) on each source, and the jitted train step of a config on synthetic batches of
the same shape, and prints a Markdown table with their ratio (> 1: the input keeps up).
Medians over ``--repeats`` timed windows, after a warm-up.

Sources (``--sources``):
  mock         the 'tfds' source on ``tfds.testing.mock_data`` LM1B (random short strings
               from a Python mock: exercises the code, not ArrayRecord reads)
  array_record the 'tfds' source on LM1B-like synthetic sentences (Zipf words, about 27 a
               sentence) written by TFDS into ArrayRecord files in a temp dir: the real read path
  prepacked    the array_record source's pre-packed copy (``data.prepacked_dir``,
               fixed_head/data/prepacked.py), made once here: rows read by batch
  prepared     the 'tfds' source on a prepared dataset: ``--data_dir`` (and ``--dataset``)
  text         the local text source (``--text_files``, bytes, tokenised and packed in
               memory when built: the rate is that of indexing the held rows)

  python benchmarks/input_pipeline.py                      # lm1b:fixed, batch 8, CPU-sized
  python benchmarks/input_pipeline.py --batch_size=256 --sources=array_record,prepared \
    --data_dir=~/tensorflow_datasets
  python benchmarks/input_pipeline.py --config=configs/lm1b.py:baseline --steps=5
  python benchmarks/input_pipeline.py --sources=array_record,prepacked --read_threads=0,2
  python benchmarks/input_pipeline.py --quick      # a CI smoke test: tiny, under a minute

``prepacked`` also prints how fast the copy was made (rows and documents a second).
"""

import contextlib
import os
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from fixed_head.data import vocab
from fixed_head.experiments import timing
from fixed_head.train import trainer
from fixed_head.data import build_source, prepacked, train_iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

config_flags.DEFINE_config_file('config', os.path.join(REPO, 'configs', 'lm1b.py:fixed'),
                                'Run config whose train step is timed.')
flags.DEFINE_integer('batch_size', 8, 'Global batch (rows) for the step and the pipeline.')
flags.DEFINE_integer('steps', 3, 'Train steps per timed window.')
flags.DEFINE_bool('step', True, 'Time the train step (--nostep: the pipeline only, e.g. where '
                  "a step of --batch_size rows does not fit the host's memory).")
flags.DEFINE_integer('batches', 100, 'Pipeline batches per timed window.')
flags.DEFINE_integer('repeats', 3, 'Timed windows (the median is shown).')
flags.DEFINE_list('sources', ['mock', 'array_record', 'text'],
                  'Sources to time: mock, array_record, prepacked, prepared, text.')
flags.DEFINE_string('tokenizer', 'sentencepiece', "'sentencepiece' or 'byte'.")
flags.DEFINE_integer('vocab_size', 8000, 'SentencePiece vocabulary for the mock and '
                     'array_record sources (their text is too small for the config 32k).')
flags.DEFINE_list('read_threads', ['0', '2'], 'data.read_threads of the tfds sources (a row '
                  'for each value).')
flags.DEFINE_integer('array_record_examples', 50_000, 'Sentences written for array_record.')
flags.DEFINE_string('dataset', 'lm1b', 'TFDS dataset of the prepared source.')
flags.DEFINE_string('data_dir', None, 'data_dir of the prepared source.')
flags.DEFINE_bool('quick', False, 'A smoke test: 2,000 synthetic sentences, sources '
                  'array_record and prepacked, batch 8, 5 batches, 1 window, 0 threads, a '
                  "1,000-piece SentencePiece vocabulary, 1 step of the config's model with 1 "
                  'layer.')
flags.DEFINE_string('text_files', os.path.join(REPO, 'README.md'),
                    'Glob for the text source (default: this repository\'s README).')


def _median_rate(fn, count: int, repeats: int) -> float:
  """Median over ``repeats`` of count / seconds of ``fn()``."""
  return statistics.median(count / _seconds(fn) for _ in range(repeats))


def _seconds(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def write_lm1b_like(data_dir: str, num_train: int) -> None:
  """LM1B-like sentences (Zipf over 20k random words, N(27, 12) words each) as a TFDS
  ArrayRecord dataset 'synthetic_sentences' in ``data_dir``."""
  import tensorflow_datasets as tfds

  class SyntheticSentences(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, features=tfds.features.FeaturesDict({'text': tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples(num_train, 0),
              'test': self._generate_examples(2000, 1)}

    def _generate_examples(self, num, seed):  # pylint: disable=arguments-differ
      rng = np.random.default_rng(seed)
      letters = np.array(list('abcdefghijklmnopqrstuvwxyz'))
      words = np.array([''.join(rng.choice(letters, rng.integers(1, 10)))
                        for _ in range(20_000)])
      p = 1.0 / np.arange(1, len(words) + 1)
      lengths = np.maximum(1, rng.normal(27, 12, num).astype(int))
      picks = rng.choice(len(words), lengths.sum(), p=p / p.sum())
      for i, (start, k) in enumerate(zip(np.cumsum(lengths) - lengths, lengths)):
        yield i, {'text': ' '.join(words[picks[start:start + k]])}

  SyntheticSentences(data_dir=data_dir, file_format='array_record').download_and_prepare()


def _data_config(source: str, seq_len: int, tmp: str, read_threads: int) -> dict:
  f = flags.FLAGS
  spm = f.tokenizer == 'sentencepiece'
  common = dict(seq_len=seq_len, tokenizer=f.tokenizer, vocab_size=f.vocab_size if spm else 259,
                log=lambda _: None)
  if source == 'text':  # tokenised once when built, so the tokenizer does not matter here
    return dict(common, name='text', files=f.text_files, tokenizer='byte', vocab_size=259)
  tfds_config = dict(common, name='tfds', read_threads=read_threads,
                     tokenizer_max_sentences=100_000)
  if source == 'mock':
    return dict(tfds_config, dataset='lm1b')
  if source in ('array_record', 'prepacked'):
    if not os.path.isdir(os.path.join(tmp, 'tfds')):
      write_lm1b_like(os.path.join(tmp, 'tfds'), f.array_record_examples)
    config = dict(tfds_config, dataset='synthetic_sentences', data_dir=os.path.join(tmp, 'tfds'))
    if source == 'prepacked':
      config['prepacked_dir'] = prepack(config, tmp)
    return config
  if source == 'prepared':
    if not f.data_dir:
      raise app.UsageError('--sources=prepared needs --data_dir (a prepared TFDS data_dir).')
    return dict(tfds_config, dataset=f.dataset, data_dir=os.path.expanduser(f.data_dir),
                vocab_size=f.config.data.vocab_size if spm else 259)
  raise app.UsageError(f'--sources: {source!r} is not mock, array_record, prepared or text.')


PREPARED = {}  # the pre-packed copy's preparation rates, printed below the table


def prepack(config: dict, tmp: str) -> str:
  """The pre-packed copy of the array_record source (made on the first call; the tokenizer
  is the array_record source's): its directory."""
  directory = os.path.join(tmp, 'prepacked')
  if not os.path.isfile(os.path.join(directory, prepacked.METADATA)):
    tokenizer = vocab.for_data(config, workdir=os.path.join(tmp, 'array_record'))
    source = build_source(config, 'train', tokenizer=tokenizer)
    start = time.perf_counter()
    metadata = prepacked.prepare(source, directory, log=lambda _: None)
    seconds = time.perf_counter() - start
    PREPARED.update(rows=metadata['rows'], docs=metadata['records'], seconds=seconds,
                    mb=sum(e['bytes'] for e in metadata['files']) / 1e6)
  return directory


def time_pipeline(source_name: str, seq_len: int, tmp: str, read_threads: int = 0
                  ) -> dict[str, float]:
  """rows/s, tokens/s (non-padding) and documents/s of the train iterator; ``tmp`` keeps
  the generated data and each source's tokenizer between calls."""
  import tensorflow_datasets as tfds
  f = flags.FLAGS
  mock = (tfds.testing.mock_data(num_examples=20_000) if source_name == 'mock'
          else contextlib.nullcontext())
  windows = []
  with mock:
    config = _data_config(source_name, seq_len, tmp, read_threads)
    workdir = os.path.join(tmp, 'array_record' if source_name == 'prepacked' else source_name)
    source = build_source(config, 'train', tokenizer=vocab.for_data(config, workdir=workdir))
    iterator = train_iterator(source, f.batch_size)
    for _ in range(f.batches):  # warm-up: reader threads started, buffers full
      next(iterator)
    for _ in range(f.repeats):
      docs = iterator.stats.documents if hasattr(iterator, 'stats') else float('nan')
      tokens, start = 0, time.perf_counter()
      for _ in range(f.batches):
        tokens += int(np.count_nonzero(next(iterator)['segment_ids']))
      seconds = time.perf_counter() - start
      if hasattr(iterator, 'stats'):
        docs = iterator.stats.documents - docs
      windows.append((f.batches * f.batch_size / seconds, tokens / seconds, docs / seconds))
  rows, tokens, docs = (statistics.median(w[i] for w in windows) for i in range(3))
  return {'rows': rows, 'tokens': tokens, 'docs': docs}


def time_train_step(config) -> float:
  """Rows/s the compiled train step consumes (synthetic batches, one local batch)."""
  f = flags.FLAGS
  setup = trainer.build_setup(config)
  n = config.data.seq_len
  rng = np.random.default_rng(0)
  batch = {'tokens': rng.integers(3, config.model.vocab_size, (f.batch_size, n), np.int32),
           'segment_ids': np.ones((f.batch_size, n), np.int32),
           'positions': np.tile(np.arange(n, dtype=np.int32), (f.batch_size, 1))}
  state = trainer.init_state(setup)
  step = trainer.make_train_step(setup, batch)
  device_batch = setup.put_batch(batch)
  state, metrics = step(state, device_batch)  # compile
  jax.block_until_ready(metrics)

  def run():
    nonlocal state
    for _ in range(f.steps):
      state, metrics = step(state, device_batch)
    jax.block_until_ready((state, metrics))

  return _median_rate(run, f.steps * f.batch_size, f.repeats)


QUICK = dict(array_record_examples=2_000, sources=['array_record', 'prepacked'], batch_size=8,
             batches=5, steps=1, repeats=1, read_threads=['0'], vocab_size=1_000)


def main(argv):
  del argv
  print(timing.header(), flush=True)
  logging.set_verbosity(logging.ERROR)
  f = flags.FLAGS
  if f.quick:
    for name, value in QUICK.items():
      setattr(f, name, value)
  config = f.config
  if f.quick:  # the step of a 1-layer model: compiles in seconds
    config.model.num_layers = 1
  config.batch_size = f.batch_size
  config.batch_tokens = None  # the batch is --batch_size rows here
  for spec in config.evals.values():
    spec['batch_size'] = min(spec['batch_size'], f.batch_size)
  seq_len = config.data.seq_len
  step_rows = time_train_step(config) if f.step else float('nan')
  lines = []
  tmp = tempfile.TemporaryDirectory()
  for source in f.sources:
    for threads in map(int, ['0'] if source == 'text' else f.read_threads):
      rate = time_pipeline(source, seq_len, tmp.name, threads)
      docs = '-' if np.isnan(rate['docs']) else f'{rate["docs"]:,.0f}'
      shown = source if source == 'text' else f'{source}, {threads} threads'
      step = '-' if np.isnan(step_rows) else f'{step_rows:,.2f}'
      ratio = '-' if np.isnan(step_rows) else f'{rate["rows"] / step_rows:,.1f}'
      lines.append(f'| {shown} | {docs} | {rate["rows"]:,.0f} | '
                   f'{rate["tokens"]:,.0f} | {step} | {ratio} |')
  print()
  config_file = os.path.relpath(config_flags.get_config_filename(flags.FLAGS['config']))
  step = (f'{config_file}{" with 1 layer (--quick)" if f.quick else ""}, n={seq_len}, '
          f'batch {f.batch_size}' if f.step else 'not timed (--nostep)')
  print(f'train step: {step}; pipeline: n={seq_len}, batch {f.batch_size}, tokenizer '
        f'{f.tokenizer}; medians of {f.repeats} windows ({f.batches} batches / {f.steps} '
        'steps)\n')
  print('| source | docs/s | rows/s (pipeline) | tokens/s | rows/s (train step) | '
        'pipeline / step |')
  print('|---|---|---|---|---|---|')
  print('\n'.join(lines))
  if PREPARED:
    p = PREPARED
    print(f'\nprepacked: made once from {p["docs"]:,} sentences in {p["seconds"]:.1f} s '
          f'({p["docs"] / p["seconds"]:,.0f} sentences/s, {p["rows"] / p["seconds"]:,.0f} '
          f'rows/s): {p["rows"]:,} rows, {p["mb"]:.1f} MB.')
  tmp.cleanup()


if __name__ == '__main__':
  app.run(main)
