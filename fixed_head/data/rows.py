"""What a source's rows hold, known without reading one.

Each source class declares its layout, ``ROWS = {key: (kind, dtype)}``, built from the parts
below; ``batch_spec`` turns it into a batch's shapes from the data config alone, which is what
the train step is compiled for before the first batch (and what ``compile.py`` compiles
without data). Kinds: 'seq' is [n] (``data.seq_len``), 'row' a scalar, 'predictions'
[``data.max_predictions_per_seq``].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

Layout = Mapping[str, tuple[str, Any]]

SIZE_FIELDS = {'seq': 'seq_len', 'predictions': 'max_predictions_per_seq'}

# A language model's packed rows (segment id 0 = padding; positions restart per document).
LM: Layout = {k: ('seq', np.int32) for k in ('tokens', 'segment_ids', 'positions')}
# A BERT encoder's inputs: [CLS] A [SEP] B [SEP], segment types, the mask of real tokens.
BERT_INPUTS: Layout = {k: ('seq', np.int32) for k in ('tokens', 'token_types', 'input_mask')}
# 1.0 for every row; the rows an evaluation pads a last batch with weigh 0.
WEIGHT: Layout = {'weight': ('row', np.float32)}


def batch_spec(layout: Layout, data_config: Mapping[str, Any], batch_size: int
               ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{key: (shape, dtype)} of a batch of ``batch_size`` rows of ``layout``."""
  sizes = {'row': ()}
  for kind, field in SIZE_FIELDS.items():
    if any(k == kind for k, _ in layout.values()):
      sizes[kind] = (int(data_config[field]),)
  return {key: ((batch_size, *sizes[kind]), np.dtype(dtype))
          for key, (kind, dtype) in layout.items()}
