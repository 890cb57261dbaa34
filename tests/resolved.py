"""Sources built as the trainer builds them: with the tokenizer the run resolves."""

from fixed_head.data import build_source, vocab


def source(data_config, split, num_examples=None, *, workdir=None, init_from=None):
  """``build_source`` with ``vocab.for_data``'s tokenizer (read, or trained into
  ``workdir``), which logs where the source does (``data.log``)."""
  tokenizer = vocab.for_data(data_config, workdir=workdir, init_from=init_from,
                             log=data_config.get('log', print))
  return build_source(data_config, split, num_examples, tokenizer=tokenizer)


def built(name, split, *, num_examples=None, workdir=None, init_from=None, **data):
  """The source ``name`` of the data fields ``data``, as ``source`` builds it."""
  return source({'name': name, **data}, split, num_examples, workdir=workdir,
                init_from=init_from)
