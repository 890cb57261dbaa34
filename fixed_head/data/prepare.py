r"""Prepares TFDS datasets once, as the ArrayRecord files that training reads by index:

  pip install -r requirements-prepare.txt
  python prepare.py lm1b [glue/mnli squad wikipedia/20230601.en] [--data_dir=DIR]

Each NAME goes through its TFDS builder's Python API,
``tfds.builder(NAME, data_dir).download_and_prepare(file_format='array_record')``: download,
extract, generate the splits. TFDS's ``tfds build`` command line does not start in
tensorflow-datasets 4.9.10 without apache-beam and mlcroissant: it imports its format converter
and its Croissant builder while loading, before any dataset code runs. The builders use TensorFlow's file API (``tf.io.gfile``) to
find and extract the downloads, so preparing needs TensorFlow (requirements-prepare.txt);
training and evaluation never import it. Wikipedia's builder is a Beam pipeline (apache-beam,
mwparserfromhell and mwxml, also in requirements-prepare.txt), run here on Beam's
DirectRunner with ``--num_workers`` processes.

``--data_dir`` defaults to TFDS's ($TFDS_DATA_DIR, else ~/tensorflow_datasets), the directory
training reads by default; give training the same one with ``--config.data.data_dir=DIR``. A
dataset already prepared there in ArrayRecord is left as it is.

``--fake_sources`` runs the same builders on small stand-ins of their source files
(``fixed_head.data.fake_sources``) instead of downloading: the whole chain, preparation to
training, offline in seconds. It needs a ``--data_dir`` of its own, which it marks
(``FAKE_SOURCES``), and real data is never prepared into a marked directory, nor fake data
into one that holds anything else.
"""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
import time
from collections.abc import Callable

from fixed_head import files
from fixed_head.data import fake_sources, tfds_text
from fixed_head.errors import UsageError

FILE_FORMAT = 'array_record'
FAKE_MARKER = 'FAKE_SOURCES'
# What each builder imports beyond tensorflow-datasets, by the name's first part.
NEEDS = {'wikipedia': ('apache_beam', 'mwparserfromhell', 'mwxml')}
INSTALL = 'pip install -r requirements-prepare.txt'


def check_installed(dataset: str) -> None:
  """UsageError naming the install command when a module the builder needs is missing."""
  needed = ('tensorflow',) + NEEDS.get(dataset.split('/')[0], ())
  missing = [m for m in needed if importlib.util.find_spec(m) is None]
  if missing:
    raise UsageError(f'preparing {dataset} needs {", ".join(missing)} (TFDS\'s builder uses '
                     f'{"them" if len(missing) > 1 else "it"}; training does not): run '
                     f'`{INSTALL}` first.')


def _check_data_dir(data_dir: str, fake: bool) -> None:
  """Keeps fake and real data apart (see the module docstring)."""
  marked = files.exists(files.join(data_dir, FAKE_MARKER))
  if fake and not marked and files.is_dir(data_dir) and files.glob(data_dir, '*'):
    raise UsageError(f'--data_dir={data_dir} already holds data that is not from '
                     '--fake_sources; give fake sources a new directory of their own.')
  if not fake and marked:
    raise UsageError(f'--data_dir={data_dir} holds data prepared from --fake_sources '
                     f'({files.join(data_dir, FAKE_MARKER)}); prepare the real data in '
                     'another directory.')


def _download_config(builder, num_workers: int):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  runner = options = None
  if isinstance(builder, tfds.core.BeamBasedBuilder):
    # pylint: disable=g-import-not-at-top
    from apache_beam.options import pipeline_options
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    # Beam's local runner, named directly: 'DirectRunner' would first fetch the Prism runner
    # binary from the internet.
    runner = fn_runner.FnApiRunner()
    options = pipeline_options.PipelineOptions(
        [f'--direct_num_workers={num_workers}',
         '--direct_running_mode=' + ('multi_processing' if num_workers > 1 else 'in_memory')])
  # Never a copy prepared by Google in another format: build from the source, in ArrayRecord.
  return tfds.download.DownloadConfig(beam_runner=runner, beam_options=options,
                                      try_download_gcs=False)


def _splits(builder) -> dict[str, int]:
  return {name: split.num_examples for name, split in sorted(builder.info.splits.items())}


def prepare(dataset: str, data_dir: str | None = None, *, download_dir: str | None = None,
            fake: bool = False, num_workers: int = 1,
            log: Callable[[str], None] = print) -> dict[str, int]:
  """Prepares ``dataset`` in ArrayRecord under ``data_dir`` (TFDS's default when None) and
  checks that it reads by index. Returns {split: number of records}.

  ``fake=True`` answers the builder's downloads with ``fake_sources``' stand-ins (and needs
  a ``data_dir``). Raises UsageError for an unknown name, a missing package, a dataset
  prepared there in another format, or fake and real data in one directory.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if fake and not data_dir:
    raise UsageError('--fake_sources needs a --data_dir of its own (so that the stand-ins '
                     'never sit where real data is looked for).')
  tfds_text.register(dataset)
  try:
    builder = tfds.builder(dataset, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UsageError(f'{dataset!r}: tensorflow-datasets {tfds.__version__} knows no dataset of '
                     'that name; see https://www.tensorflow.org/datasets/catalog/overview.'
                     ) from None
  where = str(builder.data_dir)
  root = data_dir or str(builder.data_dir_root)
  if builder.is_prepared():
    file_format = tfds_text.prepared_format(builder)
    if file_format != FILE_FORMAT:
      again = tfds_text.prepare_command(dataset, 'ANOTHER_DIR')
      raise UsageError(f'{dataset} is already prepared in {where} as {file_format}, which '
                       f'cannot be read by index; run `{again}` and give training '
                       f'--config.data.data_dir=ANOTHER_DIR, or delete {where} first.')
    _check_data_dir(root, fake)
    log(f'{dataset}: already prepared in {where}.')
    return _splits(builder)
  check_installed(dataset)
  _check_data_dir(root, fake)
  size = builder.info.download_size
  start = time.perf_counter()
  with contextlib.ExitStack() as stack:
    if fake:
      scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix='fake_sources_'))
      sources = fake_sources.write(dataset, scratch)  # refuses a name it has no stand-in for
      files.make_dirs(root)
      files.write_atomically(files.join(root, FAKE_MARKER),
                             'Prepared by python prepare.py --fake_sources: '
                             'small stand-ins of the source files, not the real datasets.\n')
      stack.enter_context(fake_sources.redirect_downloads(sources))
    log(f'{dataset}: preparing in {where} from '
        + ('fake sources (fixed_head/data/fake_sources.py)' if fake else
           f'its source ({size} to download)' if size else 'its source'))
    builder.download_and_prepare(file_format=FILE_FORMAT, download_dir=download_dir,
                                 download_config=_download_config(builder, num_workers))
  splits = _splits(builder)
  for split in splits:  # every split opens for reading by index, as training opens it
    tfds.data_source(dataset, split=split, data_dir=data_dir, download=False)
  counts = ', '.join(f'{split} {n:,}' for split, n in splits.items())
  log(f'{dataset}: prepared in {where} in {time.perf_counter() - start:.0f} s: {counts} '
      'records.')
  return splits
