"""fixed_head/experiments/position_effect.py: the difference in differences of the loss by
target position, and the decision rule of RESULTS.md 3c, on hand-made numbers."""

import math

import numpy as np
import pytest

from fixed_head.experiments import position_effect

LABELS = ('1', '2-3', '4-7', '8-15', '16-31', '32-63')
TOKENS = {b: float(t) for b, t in zip(LABELS, (1, 2, 4, 8, 16, 32))}


def arm(head_size, seed, losses):
  return {'emb_dim': 128, 'num_heads': 16, 'seq_len': 64, 'head_size': head_size, 'seed': seed,
          'bins': dict(zip(LABELS, losses)), 'tokens': TOKENS}


def runs(late_cost, noise=(0.0, 0.004, -0.004), offset=0.02):
  """d_p = 8 and 64 at three seeds: the small head costs ``offset`` everywhere and
  ``late_cost`` more from t = 8 on (+ a seed's noise)."""
  out = []
  for seed, eps in enumerate(noise):
    ref = [2.5, 2.0, 1.8, 1.7, 1.65, 1.6]
    out.append(arm(64, seed, ref))
    out.append(arm(8, seed, [v + offset + (late_cost + eps if i >= 3 else 0.0)
                             for i, v in enumerate(ref)]))
  return out


def floor(late):
  return {64: {'bins': dict(zip(LABELS, (2.5, 1.9, 1.7, late, late, late))), 'tokens': TOKENS}}


def test_split_loss_weights_bins_by_their_tokens_and_leaves_out_the_bin_across_d_p():
  bins = dict(zip(LABELS, (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)))
  early, late = position_effect.split_loss(bins, TOKENS, 8)
  assert early == pytest.approx((1 + 2 * 2 + 3 * 4) / 7)
  assert late == pytest.approx((4 * 8 + 5 * 16 + 6 * 32) / 56)
  early, late = position_effect.split_loss(bins, TOKENS, 12)  # 8-15 holds t = 12: in neither
  assert early == pytest.approx((1 + 2 * 2 + 3 * 4) / 7)
  assert late == pytest.approx((5 * 16 + 6 * 32) / 48)


def test_a_late_cost_beyond_the_seed_noise_past_the_floor_is_an_effect():
  (entry,) = position_effect.effects(runs(0.05), floor(1.8))
  assert (entry['head_size'], entry['reference'], entry['seeds']) == (8, 64, 3)
  np.testing.assert_allclose(entry['did'], [0.05, 0.054, 0.046])  # the offset cancels
  assert entry['did_se'] == pytest.approx(0.004 / math.sqrt(3))
  assert entry['delta']['1'][0] == pytest.approx(0.02)
  assert entry['verdict'].startswith('effect: DiD > 2 SE; both below the 5-gram floor')


def test_no_late_cost_is_no_effect_and_a_late_gain_is_the_opposite():
  (entry,) = position_effect.effects(runs(0.0), floor(1.8))
  assert entry['verdict'].startswith('no effect')
  (entry,) = position_effect.effects(runs(-0.05), floor(1.8))
  assert entry['verdict'].startswith('opposite of the prediction')


def test_models_above_the_floor_are_inconclusive_whatever_the_did():
  (entry,) = position_effect.effects(runs(0.05), floor(1.6))  # the small arm's late ~1.69
  assert entry['verdict'].startswith('inconclusive: above the 5-gram floor')
  assert entry['floor_late'] == pytest.approx(1.6)
  (entry,) = position_effect.effects(runs(0.05), None)
  assert entry['verdict'].endswith('no n-gram floor to compare with')
  (entry,) = position_effect.effects([r for r in runs(0.05) if r['seed'] == 0], floor(1.8))
  assert entry['verdict'] == 'one seed: no error bar, no verdict'


def test_the_table_and_the_figure(tmp_path):
  entries = position_effect.effects(runs(0.05), floor(1.8))
  text = position_effect.table(entries)
  assert '| 64 | 128 | 16 | 8 | 64 | +0.0500, +0.0540, +0.0460 | +0.0500 ± 0.0023 |' in text
  assert '| 64 | 8 | +0.0200 ± 0.0000 |' in text
  path = position_effect.plot(entries, str(tmp_path / 'p.png'), 'footer', 'title')
  with open(path, 'rb') as f:
    assert f.read(4) == b'\x89PNG'


def test_rank_summary_averages_layers_and_heads_then_seeds(tmp_path):
  """fixed_head/experiments/rank_summary.py on hand-written analyze.py files: two seeds of a
  d_p = 8 run whose loss rises by 0.1 and 0.2 when cut to rank 4."""
  from fixed_head.experiments import logit_rank, rank_summary  # pylint: disable=g-import-not-at-top
  workdirs = []
  for seed, (cost, erank) in enumerate(((0.1, 3.0), (0.2, 5.0))):
    workdir = tmp_path / f'run{seed}'
    workdir.mkdir()
    (workdir / logit_rank.CSV).write_text(
        'layer,head,erank,rank99,n,d_p,heads,variant,seed\n'
        f'0,0,{erank - 1},2,64,8,16,baseline,{seed}\n0,1,{erank + 1},4,64,8,16,baseline,{seed}\n')
    (workdir / logit_rank.ABLATION_CSV).write_text(
        'r,loss,loss_1,loss_2-3,num_tokens\n'
        f'4,{1.6 + cost},2.5,{2.0 + 2 * cost},100\n8,1.6,2.5,2.0,100\n')
    workdirs.append(str(workdir))
  (tmp_path / 'other').mkdir()
  assert rank_summary.measured(workdirs + [str(tmp_path / 'other')]) == workdirs
  ranks, ablation = rank_summary.summarize(workdirs)
  (entry,) = ranks
  assert (entry['variant'], entry['n'], entry['heads'], entry['d_p'], entry['seeds']) == (
      'baseline', 64, 16, 8, 2)
  assert entry['erank'] == pytest.approx((4.0, math.sqrt(2.0)))
  assert entry['rank99'][0] == pytest.approx(3.0)
  (cut,) = ablation
  assert cut['r'] == 4 and cut['cost'] == pytest.approx((0.15, 0.05 * math.sqrt(2)))
  assert cut['cost_2-3'][0] == pytest.approx(0.3) and cut['cost_1'][0] == pytest.approx(0.0)
  text = rank_summary.table(ranks, ablation)
  assert '| baseline | 64 | 16 | 8 | 4 | 2 | +0.1500 ± 0.0707 | +0.0000 | +0.3000 |' in text
  path = rank_summary.plot(ablation, str(tmp_path / 'a.png'), 'footer', 'title')
  with open(path, 'rb') as f:
    assert f.read(4) == b'\x89PNG'
