"""configs/bert.py: every column counts the paper's parameters, every column / stage / task /
runlocal combination validates, and the argument is checked. Only counts; no model is built."""

import glob
import inspect

import pytest

from fixed_head import accounting, data
from fixed_head.config import ModelConfig
from fixed_head.data import bert_pretraining, glue, squad
from fixed_head.train import run_config

import repo_configs

bert = repo_configs.load('bert')

VARIANTS = ('', ',stage=2', ',task=mnli', ',task=squad')
ALL_ARGS = [column + variant + local for column in bert.COLUMNS for variant in VARIANTS
            for local in ('', ',runlocal')]
SOURCE_CLASSES = {'bert_pretraining': bert_pretraining.BertPretrainingData,
                  'glue': glue.GlueData, 'squad': squad.SquadData}
FRAMEWORK_OPTIONS = {'split', 'num_examples', 'tokenizer'}  # passed by build_source


def model_of(arg: str) -> ModelConfig:
  return ModelConfig.from_mapping(bert.get_config(arg).model)


def test_fifteen_columns_of_the_four_tables():
  tables = [table for table, *_ in bert.COLUMNS.values()]
  assert len(bert.COLUMNS) == 15
  assert {t: tables.count(t) for t in set(tables)} == {
      'Table 1': 3, 'Table 2A': 4, 'Table 2B': 4, 'Table 3': 4}
  assert set(bert.PUBLISHED_PARAMS) == set(bert.COLUMNS)
  assert [bert.PUBLISHED_PARAMS[f'large_h{h}'] for h in (8, 16, 32)] == [336] * 3
  assert bert.PUBLISHED_PARAMS['fixed_d512_dp128'] == bert.PUBLISHED_PARAMS['fixed_d512_h8'] == 168


@pytest.mark.parametrize('column', list(bert.COLUMNS))
def test_column_counts_round_to_the_published_million(column):
  table, d, h, dp = bert.COLUMNS[column]
  model = model_of(column)
  assert (model.emb_dim, model.num_heads, model.head_size) == (d, h, dp)
  assert model.resolved_head_size == (d // h if dp is None else dp)
  assert (model.num_layers, model.vocab_size, model.max_len) == (24, 30_522, 512)
  assert model.model_type == 'bert' and model.norm == 'post' and model.activation == 'gelu'
  count = accounting.count_params(model)
  assert round(count / 1e6) == bert.PUBLISHED_PARAMS[column], (table, count)


@pytest.mark.parametrize('arg', ALL_ARGS)
def test_every_combination_validates(arg):
  config = bert.get_config(arg)
  model = run_config.model_config(run_config.validate(config, num_devices=8))
  starts_afresh = 'task=' not in arg and 'stage=2' not in arg
  # Stage 2 and fine-tuning name their starting run on the command line; until then a
  # placeholder that is no workdir stops them.
  assert config.init_from == (None if starts_afresh else bert.INIT_FROM_UNSET)
  assert config.data.vocab_size == model.vocab_size
  assert config.data.seq_len <= model.max_len


@pytest.mark.parametrize('arg', ALL_ARGS)
def test_data_options_are_the_sources_own(arg):
  """Every config.data field (and every evaluator's data override) is a keyword of the
  source's constructor or a field of its tokenizer (TOKENIZER_FIELDS, which the run resolves:
  fixed_head/data/vocab.py); the framework's own arguments are not set by the config."""
  config = bert.get_config(arg)
  assert config.data.name in data.SOURCES
  cls = SOURCE_CLASSES[config.data.name]
  params = set(inspect.signature(cls.__init__).parameters) - {'self'}
  params |= set(cls.TOKENIZER_FIELDS)
  fields = set(config.data) - {'name'}
  for spec in config.evals.values():
    fields |= set(spec.get('data') or {})
  assert fields <= params - FRAMEWORK_OPTIONS, sorted(fields - params)


@pytest.mark.parametrize('column', list(bert.COLUMNS))
def test_fine_tuning_keeps_the_pretrained_model(column):
  """init_from refuses another model, so every stage and task of a column is one model; only
  model.remat (what the backward pass recomputes, no parameter) differs: stage 2 recomputes
  each block."""
  for local in ('', ',runlocal'):
    fields = bert.get_config(column + local).model.to_dict()
    assert fields['remat'] == 'none' and fields['scan_layers']
    for variant in VARIANTS[1:]:
      model = bert.get_config(column + variant + local).model.to_dict()
      assert model.pop('remat') == ('full' if 'stage=2' in variant else 'none'), variant
      assert model == {k: v for k, v in fields.items() if k != 'remat'}, variant


def test_stage_1_follows_the_paper():
  c = bert.get_config('fixed_d512_h32')
  assert c.task.name == 'bert_pretraining' and c.data.name == 'bert_pretraining'
  assert (c.data.seq_len, c.data.max_predictions_per_seq) == (128, 20)
  assert (c.num_train_steps, c.batch_size, c.batch_tokens) == (450_000, 1024, None)
  o = c.optimizer
  assert (o.name, o.learning_rate, o.schedule, o.warmup_steps) == ('bert_adamw', 1e-4, 'bert',
                                                                    5000)
  assert (o.weight_decay, o.b1, o.b2, o.eps, o.grad_clip_norm) == (0.01, 0.9, 0.999, 1e-6, 1.0)
  assert o.weight_decay_mode == 'decoupled'
  assert c.model.dropout_rate == c.model.attention_dropout_rate == 0.1
  assert c.checkpoint.every_steps == 10_000 and c.log_every_steps == 100
  assert c.evals.valid.type == 'pretraining' and c.evals.valid.split == 'eval'
  assert c.data.dataset == ['wikipedia/20230601.en'] and c.data.files is None
  assert (c.data.train_split, c.data.eval_split) == ('train[:99%]', 'train[99%:]')


@pytest.mark.parametrize('column', ['large_h16', 'fixed_d512_h32', 'fixed_d768_h20'])
def test_stage_2_uses_n_512_and_a_new_3k_warm_up(column):
  one, two = bert.get_config(column), bert.get_config(column + ',stage=2')
  assert (two.data.seq_len, two.data.max_predictions_per_seq) == (512, 80)
  assert two.num_train_steps == 50_000 and two.optimizer.warmup_steps == 3_000
  assert (two.optimizer.name, two.optimizer.schedule) == ('bert_adamw', 'bert')
  assert two.batch_size == 1024
  assert two.model.max_len == one.model.max_len == 512  # no new position table
  assert two.task.name == 'bert_pretraining' and two.init_from == bert.INIT_FROM_UNSET


def test_mnli_fine_tuning():
  c = bert.get_config('fixed_d512_h32,task=mnli')
  assert c.task.to_dict() == {'name': 'classification', 'num_classes': 3}
  assert (c.data.name, c.data.task, c.data.seq_len) == ('glue', 'mnli', 128)
  assert c.data.eval_split == 'validation_matched'
  assert set(c.evals) == {'matched', 'mismatched'}
  assert c.evals.mismatched.data.eval_split == 'validation_mismatched'
  assert all(spec.type == 'classification' for spec in c.evals.values())
  assert c.batch_size == 32 and c.optimizer.learning_rate == 2e-5
  assert c.num_train_steps == int(392_702 / 32 * 3) == 36_815
  assert c.optimizer.warmup_steps == 3_681
  assert (c.optimizer.name, c.optimizer.schedule) == ('bert_adamw', 'bert')
  assert c.optimizer.weight_decay == 0.01 and c.model.dropout_rate == 0.1


def test_squad_fine_tuning():
  c = bert.get_config('fixed_d512_h32,task=squad')
  assert c.task.to_dict() == {'name': 'span_qa'}
  assert (c.data.name, c.data.seq_len, c.data.doc_stride, c.data.max_query_len) == (
      'squad', 384, 128, 64)
  assert (c.data.train_split, c.data.eval_split) == ('train', 'validation')
  assert set(c.evals) == {'squad'}
  squad_eval = c.evals.squad
  assert (squad_eval.type, squad_eval.max_answer_length, squad_eval.n_best) == ('squad', 30, 20)
  assert squad_eval.get('num_examples') is None  # whole questions: the whole split
  assert c.batch_size == 32 and c.optimizer.learning_rate == 3e-5
  assert c.num_train_steps == int(88_641 / 32 * 2) == 5_540 and c.optimizer.warmup_steps == 554
  assert (c.optimizer.name, c.optimizer.schedule) == ('bert_adamw', 'bert')


@pytest.mark.parametrize('arg', ALL_ARGS)
def test_every_run_uses_googles_optimizer_and_schedule(arg):
  o = bert.get_config(arg).optimizer
  assert (o.name, o.schedule, o.weight_decay_mode) == ('bert_adamw', 'bert', 'decoupled')


def test_linear_schedule_runs_the_factor_docs_give_above_googles():
  """docs/bert.md: after warm-up 'linear' is T / (T - w) times 'bert'."""
  def factor(arg):
    c = bert.get_config(arg)
    return c.num_train_steps / (c.num_train_steps - c.optimizer.warmup_steps)

  assert [round(factor(f'large_h16{v}'), 3) for v in VARIANTS] == [1.011, 1.064, 1.111, 1.111]


@pytest.mark.parametrize('column', list(bert.COLUMNS))
def test_runlocal_is_small_and_keeps_the_column_shape(column):
  _, d, h, dp = bert.COLUMNS[column]
  model = model_of(column + ',runlocal')
  assert accounting.count_params(model) < 2_000_000
  assert model.num_layers == 2 and model.max_len == 64 and model.vocab_size == 512
  assert model.num_heads == h and model.emb_dim * 8 == d and model.mlp_dim == 4 * model.emb_dim
  assert model.is_fixed_head == (dp is not None)  # fixed stays fixed, baseline stays baseline
  assert model.resolved_head_size * 8 == (d // h if dp is None else dp)


@pytest.mark.parametrize('variant', VARIANTS)
def test_runlocal_runs_are_short(variant):
  c = bert.get_config('fixed_d512_h8' + variant + ',runlocal')
  assert c.batch_size == 16 and c.num_train_steps <= 200
  assert c.eval_every_steps <= c.num_train_steps
  assert c.optimizer.warmup_steps == c.num_train_steps // 10
  for spec in c.evals.values():
    assert spec.batch_size <= 64


def test_runlocal_pretraining_reads_files_of_the_repository():
  for stage, seq_len in ((1, 32), (2, 64)):
    c = bert.get_config(f'large_h16,stage={stage},runlocal')
    assert c.data.seq_len == seq_len and c.data.dataset is None
    assert all(glob.glob(pattern) for pattern in c.data.files)


def test_runlocal_fine_tuning_reads_slices():
  mnli = bert.get_config('large_h16,task=mnli,runlocal')
  assert mnli.data.train_split == 'train[:2000]'
  assert mnli.data.eval_split == 'validation_matched[:500]'
  assert mnli.evals.mismatched.data.eval_split == 'validation_mismatched[:500]'
  squad_config = bert.get_config('large_h16,task=squad,runlocal')
  assert squad_config.data.train_split == 'train[:2000]'
  assert squad_config.data.seq_len == 64


@pytest.mark.parametrize('arg', [
    'large', 'fixed_d512_h64', '', 'large_h16,stage=3', 'large_h16,stage=', 'large_h16,task=glue',
    'large_h16,stage=2,task=mnli', 'large_h16,task=squad,stage=2', 'large_h16,runlocal=1',
    'large_h16,local', 'large_h16,stage=1,stage=2', 'large_h16,runlocal,runlocal'])
def test_bad_arguments_name_the_valid_columns(arg):
  with pytest.raises(ValueError, match=r'configs/bert\.py:.*large_h8, large_h16') as e:
    bert.get_config(arg)
  assert all(column in str(e.value) for column in bert.COLUMNS)
