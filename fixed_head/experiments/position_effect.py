"""Where a small head costs: the loss by target position of one model at several head sizes
(RESULTS.md section 3c; the runs of figure 'position').

The query that predicts the target at position t sees t keys, so by Theorem 1 a head of size
d_p is not rank-limited at t <= d_p. Within one configuration (d, h, n) the arm with the
largest d_p is the reference; for every other d_p and seed:

  dL(bin)  = L_bin(d_p) - L_bin(reference)                 (same seed, same targets)
  early    = the bins that end below d_p; late = the bins that start at d_p or later (a bin
             across d_p is in neither); L_early, L_late: token-weighted over those bins
  DiD      = [L_late(d_p) - L_late(ref)] - [L_early(d_p) - L_early(ref)]

An even offset (a larger head has more parameters, which may help everywhere) cancels in
DiD. The decision rule, fixed before the runs: an effect of the rank limit at d_p only if
the mean DiD over seeds exceeds 2 standard errors (std / sqrt(seeds)) and both arms' mean
late loss is below the count n-gram floor's late loss on the same targets; above the floor
the runs are not trained enough to test anything.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fixed_head import metrics
from fixed_head.experiments import figures

FIGURE = 'position'
GROUP = ('emb_dim', 'num_heads', 'seq_len')


def _lower(label: str) -> int:
  return int(label.split('-')[0])


def _upper(label: str) -> int:
  return int(label.split('-')[-1])


def split_loss(bins: Mapping[str, float], tokens: Mapping[str, float],
               d_p: int) -> tuple[float, float]:
  """(L_early, L_late): the token-weighted mean loss of the bins ending below ``d_p`` and of
  those starting at ``d_p`` or later. ``bins``/``tokens``: {label: loss / count}."""
  def mean(labels):
    count = sum(tokens[b] for b in labels)
    return sum(bins[b] * tokens[b] for b in labels) / count if count else math.nan
  return (mean([b for b in bins if _upper(b) < d_p]),
          mean([b for b in bins if _lower(b) >= d_p]))


def effects(runs: Sequence[dict[str, Any]], floor: Mapping[int, dict] | None = None,
            floor_order: int = 5) -> list[dict[str, Any]]:
  """runs: [{'emb_dim', 'num_heads', 'seq_len', 'head_size', 'seed', 'bins': {label: loss},
  'tokens': {label: count}}]; floor: {seq_len: {'bins', 'tokens'}} of the n-gram of
  ``floor_order`` (or None). Returns one entry per configuration and d_p below its
  reference: dL per bin (mean, std over seeds), DiD (per seed, mean, std, se), both arms'
  late loss, the floor's, and the verdict of the decision rule."""
  groups: dict[tuple, dict[int, dict[int, dict]]] = collections.defaultdict(
      lambda: collections.defaultdict(dict))
  for run in runs:
    groups[tuple(run[k] for k in GROUP)][run['head_size']][run['seed']] = run
  out = []
  for key, arms in sorted(groups.items()):
    reference = max(arms)
    for d_p in sorted(arms):
      seeds = sorted(set(arms[d_p]) & set(arms[reference]))
      if d_p == reference or not seeds:
        continue
      labels = list(arms[d_p][seeds[0]]['bins'])
      delta = {b: [arms[d_p][s]['bins'][b] - arms[reference][s]['bins'][b] for s in seeds]
               for b in labels}
      did, late = [], {d_p: [], reference: []}
      for s in seeds:
        small = split_loss(arms[d_p][s]['bins'], arms[d_p][s]['tokens'], d_p)
        large = split_loss(arms[reference][s]['bins'], arms[reference][s]['tokens'], d_p)
        did.append((small[1] - large[1]) - (small[0] - large[0]))
        late[d_p].append(small[1])
        late[reference].append(large[1])
      mean, std = metrics.mean_and_spread(did)
      entry = dict(zip(GROUP, key), head_size=d_p, reference=reference, seeds=len(seeds),
                   did=did, did_mean=mean, did_std=std, did_se=std / math.sqrt(len(seeds)),
                   delta={b: metrics.mean_and_spread(v) for b, v in delta.items()},
                   late=sum(late[d_p]) / len(seeds),
                   late_reference=sum(late[reference]) / len(seeds))
      entry['floor_late'] = None
      if floor and key[2] in floor:
        entry['floor_late'] = split_loss(floor[key[2]]['bins'], floor[key[2]]['tokens'],
                                         d_p)[1]
      entry['verdict'] = verdict(entry, floor_order)
      out.append(entry)
  return out


def verdict(entry: Mapping[str, Any], floor_order: int = 5) -> str:
  """The decision rule's outcome for one ``effects`` entry."""
  if len(entry['did']) < 2:
    return 'one seed: no error bar, no verdict'
  if entry['floor_late'] is None:
    trained = 'no n-gram floor to compare with'
  elif max(entry['late'], entry['late_reference']) >= entry['floor_late']:
    return (f'inconclusive: above the {floor_order}-gram floor on the late positions (not '
            'trained enough to test the claim)')
  else:
    trained = f'both below the {floor_order}-gram floor on the late positions'
  z = 2 * entry['did_se']
  if entry['did_mean'] > z:
    return f'effect: DiD > 2 SE; {trained}'
  if entry['did_mean'] < -z:
    return f'opposite of the prediction: DiD < -2 SE; {trained}'
  return f'no effect: |DiD| <= 2 SE; {trained}'


def table(entries: Sequence[dict[str, Any]]) -> str:
  """The DiD table (one row per configuration and d_p) and the dL-by-bin table."""
  rows = []
  for e in entries:
    floor = '-' if e['floor_late'] is None else f"{e['floor_late']:.4f}"
    rows.append((e['seq_len'], e['emb_dim'], e['num_heads'], e['head_size'], e['reference'],
                 ', '.join(f'{v:+.4f}' for v in e['did']),
                 f"{e['did_mean']:+.4f} ± {e['did_se']:.4f}", f"{e['late']:.4f}",
                 f"{e['late_reference']:.4f}", floor, e['verdict']))
  did = figures.markdown(('n', 'd', 'h', 'd_p', 'reference d_p', 'DiD per seed',
                          'DiD mean ± SE', 'late loss', 'late loss (reference)',
                          'late floor', 'verdict'), rows)
  labels = list(entries[0]['delta']) if entries else []
  by_bin = figures.markdown(
      ('n', 'd_p', *(f't = {b}' for b in labels)),
      [(e['seq_len'], e['head_size'],
        *(f"{e['delta'][b][0]:+.4f} ± {e['delta'][b][1]:.4f}" for b in labels))
       for e in entries])
  return (did + '\n\ndL(bin) = L(d_p) - L(reference) by target position t, mean ± std over '
          'seeds:\n\n' + by_bin)


def plot(entries: Sequence[dict[str, Any]], path: str, footer: str, title: str) -> str:
  """dL by position bin, one line per d_p (error bars: std over seeds), a dotted line
  where t passes each d_p."""
  from fixed_head import files  # pylint: disable=g-import-not-at-top
  fig, ax = figures.new_figure(title, 'target position t (the query sees t keys)',
                               'L(d_p) - L(reference) (nats)', footer, size=(7.5, 4.8),
                               footer_y=0.005)
  for e in entries:
    labels = list(e['delta'])
    line = ax.errorbar(range(len(labels)), [e['delta'][b][0] for b in labels],
                       yerr=[e['delta'][b][1] for b in labels], capsize=3, marker='o',
                       label=f"d_p = {e['head_size']} - d_p = {e['reference']} "
                             f"(n = {e['seq_len']})")
    edge = [i for i, b in enumerate(labels) if _lower(b) >= e['head_size']]
    if edge:
      ax.axvline(edge[0] - 0.5, color=line[0].get_color(), linestyle=':', linewidth=1)
    ax.set_xticks(range(len(labels)), labels)
  ax.axhline(0, color='0.5', linewidth=0.8)
  ax.legend(fontsize=7)
  files.write_atomically(path, figures.png(fig, bottom=0.03))
  return path
