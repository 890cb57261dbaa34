"""What report.py and theory_figures.py both write: CSV and Markdown tables, matplotlib
figures rendered to PNG bytes (no pyplot state), and the 'machine | date | command' line
that every figure and table carries."""

from __future__ import annotations

import csv
import datetime
import io
import os
import platform
import sys
import textwrap
from collections.abc import Sequence
from typing import Any


def machine() -> str:
  """The machine in a few words: OS, CPU and core count."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return f'{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores'


def provenance(command: str | None = None) -> str:
  """'machine | date | command' for a figure's footer."""
  command = command or 'python ' + ' '.join(sys.argv)
  return f'{machine()} | {datetime.date.today().isoformat()} | {command}'


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
  """``rows`` as CSV text; ``columns`` default to the first row's keys (missing cells '')."""
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=list(columns or rows[0]), lineterminator='\n')
  writer.writeheader()
  for row in rows:
    writer.writerow({c: row.get(c, '') for c in writer.fieldnames})
  return out.getvalue()


def markdown(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A Markdown table."""
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  lines += ['| ' + ' | '.join(str(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines)


def new_figure(title: str, xlabel: str, ylabel: str, footer: str, *,
               size: tuple[float, float], footer_y: float, wrap: int | None = None):
  """(figure, axes) with a title, labelled axes, a grid and ``footer`` in small grey print
  at the bottom left (wrapped at ``wrap`` characters if given)."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=size)
  ax = fig.add_subplot()
  ax.set_title(title, fontsize=11)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(True, alpha=0.3)
  text = '\n'.join(textwrap.wrap(footer, wrap)) if wrap else footer
  fig.text(0.01, footer_y, text, fontsize=6, color='0.35', ha='left', va='bottom')
  return fig, ax


def png(fig, *, bottom: float) -> bytes:
  """The figure as PNG bytes at 120 dpi, laid out above the footer's ``bottom`` margin."""
  fig.tight_layout(rect=(0, bottom, 1, 1))
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=120)
  return buffer.getvalue()
