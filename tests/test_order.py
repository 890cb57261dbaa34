"""The one train order (fixed_head/data/order.py), the data state's version and the seeds'
names: one order for every source, old states refused with one line, old names mapped."""

import numpy as np
import pytest

from fixed_head import data as data_lib
from fixed_head import renames
from fixed_head.data import order
from fixed_head.errors import UsageError


def test_the_order_is_texts_permutation_epoch_after_epoch():
  stream = order.EpochOrder(7, 3)
  rows = stream.take(np.arange(21))
  for epoch in range(3):  # the order the Shakespeare runs of RESULTS.md were trained in
    want = np.random.default_rng([3, epoch]).permutation(7)
    np.testing.assert_array_equal(rows[7 * epoch:7 * (epoch + 1)], want)
  assert [stream[k] for k in range(21)] == rows.tolist()
  assert len(stream) == order.ENDLESS
  assert not np.array_equal(rows, order.EpochOrder(7, 4).take(np.arange(21)))
  with pytest.raises(IndexError):
    stream.take([order.ENDLESS])
  stored = order.of_split(5, 'eval', 3)
  assert len(stored) == 5 and stored.take([4, 0]).tolist() == [4, 0]
  with pytest.raises(IndexError):
    stored[5]


class _Rows:
  def __init__(self, same_as_v1):
    self.READS_V1_STATES = same_as_v1  # pylint: disable=invalid-name

  def __len__(self):
    return 100

  def get_batch(self, indices):
    return {'tokens': np.asarray(indices)[:, None]}


def test_an_index_iterator_state_round_trips_and_an_old_one_is_refused_where_rows_moved():
  iterator = data_lib.IndexIterator(_Rows(False), 4)
  next(iterator)
  state = iterator.get_state()
  assert state == {'next_batch': 1, 'version': order.STATE_VERSION}
  again = data_lib.IndexIterator(_Rows(False), 4)
  again.set_state(state)
  np.testing.assert_array_equal(next(again)['tokens'], next(iterator)['tokens'])
  with pytest.raises(UsageError, match=r"^the checkpoint's data state \(_Rows read by index\) "
                     r'is version 1 \(no version field\), this code reads version 2: .*'
                     r'start a new --workdir') as refused:
    again.set_state({'next_batch': 1})
  assert '\n' not in str(refused.value)
  with pytest.raises(UsageError, match='is version 7'):
    again.set_state({'next_batch': 1, 'version': 7})
  kept = data_lib.IndexIterator(_Rows(True), 4)  # text, synthetic: their rows did not move
  kept.set_state({'next_batch': 2})
  assert next(kept)['tokens'][0, 0] == 8


def test_text_and_synthetic_read_old_index_states():
  from fixed_head.data import synthetic, text  # pylint: disable=g-import-not-at-top
  assert text.TextFilesLM.READS_V1_STATES and synthetic.SyntheticCopyLM.READS_V1_STATES
  from fixed_head.data import bert_pretraining, glue, squad  # pylint: disable=g-import-not-at-top
  for moved in (bert_pretraining.BertPretrainingData, glue.GlueData, squad.SquadData):
    assert not getattr(moved, 'READS_V1_STATES', False)


@pytest.mark.parametrize('name, new', [('synthetic', 'language_seed'),
                                       ('glue', 'shuffle_seed'), ('squad', 'shuffle_seed'),
                                       ('bert_pretraining', 'shuffle_seed')])
def test_a_saved_config_with_the_old_seed_name_reads_under_the_new_one(name, new):
  saved = {'name': name, 'seed': 3, 'seq_len': 8}
  assert renames.data_fields_today(saved) == {'name': name, new: 3, 'seq_len': 8}
  assert saved == {'name': name, 'seed': 3, 'seq_len': 8}  # not changed in place
  assert renames.data_fields_today({'name': 'text', 'shuffle_seed': 1}) == {
      'name': 'text', 'shuffle_seed': 1}
  with pytest.raises(UsageError, match=rf"^data.seed of data.name='{name}' is now called "
                     rf'data.{new} \(.*\); set data.{new} instead.$'):
    data_lib.build_source(saved, 'train')


def test_the_synthetic_language_is_unchanged_under_its_new_name():
  config = {'name': 'synthetic', 'seq_len': 8, 'vocab_size': 8, 'copy_prob': 0.9,
            'concentration': 1.0}
  new = data_lib.build_source(dict(config, language_seed=2), 'train')
  old = data_lib.build_source(renames.data_fields_today(dict(config, seed=2)), 'train')
  np.testing.assert_array_equal(new.get_batch(range(4))['tokens'],
                                old.get_batch(range(4))['tokens'])
