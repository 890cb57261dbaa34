r"""One table of headline numbers from the outputs benchmarks/gpu.sh keeps in a directory.

Reads DIR/matmul.md, attention.md, train_step.md, cost_growth.md and input_pipeline.md (the
stdout of each script; any missing one is skipped) and prints: the matmul ceiling, ours /
Flax attention time, each train step's MFU and tokens/s, what d_p = n costs at n = 512 (or
the longest n measured) against d_p = d / h, and the input pipeline's rows/s over the
step's.

  python benchmarks/headline.py /tmp/fixed_head_benchmarks
"""

import os
import re
import sys


def table(text: str, head: str) -> list[list[str]]:
  """The rows of the Markdown table in ``text`` whose header row starts with ``head``."""
  lines = text.splitlines()
  start = next((i for i, line in enumerate(lines) if line.startswith(head)), None)
  if start is None:
    return []
  rows = []
  for line in lines[start + 2:]:
    if not line.startswith('|'):
      break
    rows.append([cell.strip() for cell in line.strip().strip('|').split('|')])
  return rows


def headline(directory: str) -> list[tuple[str, str]]:
  """(measure, value) pairs from the outputs found in ``directory``."""
  def read(name):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      return None
    with open(path, encoding='utf-8') as f:
      return f.read()

  found = []
  first = next((t.splitlines()[0] for t in map(read, ('matmul.md', 'train_step.md')) if t), '')
  if first:
    found.append(('machine', first.split(' | ')[0] + ' | ' + first.split(' | ')[1]))
  if text := read('matmul.md'):
    for row in table(text, '| dtype |'):
      found.append((f'matmul ceiling, {row[0]}', row[-1]))
  if text := read('attention.md'):
    ratio = re.search(r'ratio ours / flax: median ([\d.]+), worst ([\d.]+)', text)
    if ratio:
      found.append(('attention time, ours / flax.nnx (fwd and fwd+bwd)',
                    f'median {ratio.group(1)}, worst {ratio.group(2)}'))
  if text := read('train_step.md'):
    for row in table(text, '| config | model |'):
      found.append((f'train step MFU, {row[0]} ({row[2]}, n = {row[3]})',
                    f'{row[8]} ({row[6]} tokens/s)'))
  if text := read('cost_growth.md'):
    rows = table(text, '| n | d_p | rows |')
    lengths = sorted({int(r[0]) for r in rows})
    if lengths:
      n = 512 if 512 in lengths else lengths[-1]
      at_n = [r for r in rows if int(r[0]) == n]
      base = next(r for r in at_n if '= d/h' in r[1])
      full = next((r for r in at_n if '= n' in r[1]), None)
      if full:
        memory = float(full[3].replace(',', '')) / float(base[3].replace(',', ''))
        found.append((f'd_p = n against d_p = d/h at n = {n}: step time (FLOPs), peak memory',
                      f'{full[7]}x ({full[8]}x), {memory:.2f}x'))
  if text := read('input_pipeline.md'):
    for row in table(text, '| source | docs/s |'):
      found.append((f'input rows/s / step rows/s, {row[0]}', f'{row[2]} / {row[4]} = {row[5]}'))
  return found


def main(argv: list[str]) -> int:
  if len(argv) != 2 or not os.path.isdir(argv[1]):
    print('usage: python benchmarks/headline.py DIR (the OUT_DIR of benchmarks/gpu.sh)',
          file=sys.stderr)
    return 2
  rows = headline(argv[1])
  if not rows:
    print(f'error: {argv[1]} holds none of the outputs benchmarks/gpu.sh writes.',
          file=sys.stderr)
    return 2
  print('\n| measure | value |\n|---|---|')
  for measure, value in rows:
    print(f'| {measure} | {value} |')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
