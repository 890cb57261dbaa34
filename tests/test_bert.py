"""BERT end to end on tiny shapes, offline: pre-training on local text (resumes exactly),
then MNLI and SQuAD fine-tuning from its checkpoint (TFDS under mock_data)."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
import tensorflow_datasets.text.glue  # noqa: F401  registers 'glue/mnli' under mock_data

from fixed_head.config import ModelConfig
from fixed_head.errors import UsageError
from fixed_head.experiments import over_seeds
from fixed_head.train import run_config, trainer
import cli
import resolved
from test_finetune_data import fake_tfds
from test_train import final_params, losses

# Pre-training then fine-tuning, every test from one pre-trained run: minutes in all.
pytestmark = pytest.mark.slow

ONE = jax.devices()[:1]
VOCAB = 160
WORDS = ('the cat dog bird sat ran flew on under over a mat tree roof and then it was red '
         'blue green small big quick slow home park river hill').split()


def write_corpus(path, num_docs=24, seed=0):
  """Google's pre-training format: one sentence per line, a blank line between documents."""
  rng = np.random.default_rng(seed)
  docs = []
  for _ in range(num_docs):
    sentences = [' '.join(rng.choice(WORDS, rng.integers(3, 8))) + ' .'
                 for _ in range(rng.integers(2, 6))]
    docs.append('\n'.join(sentences))
  path.write_text('\n\n'.join(docs) + '\n')
  return str(path)


def model_fields(**changes):
  fields = ModelConfig(model_type='bert', vocab_size=VOCAB, emb_dim=16, num_heads=4,
                       head_size=8, num_layers=2, mlp_dim=32, max_len=32, activation='gelu',
                       layer_norm_eps=1e-12, dropout_rate=0.1, attention_dropout_rate=0.1,
                       kernel_init='truncated_normal', embed_init='truncated_normal').to_dict()
  fields.update(changes)
  return fields


def base_config(steps: int) -> ml_collections.ConfigDict:
  c = run_config.defaults()
  c.model.update(model_fields())
  c.num_train_steps = steps
  c.batch_size = 8
  c.optimizer.update(dict(learning_rate=1e-3, schedule='linear', warmup_steps=2,
                          weight_decay=0.01, b2=0.999, eps=1e-6))
  c.log_every_steps = 1
  c.eval_every_steps = 0
  c.checkpoint.every_steps = 100
  return c


def pretrain_config(corpus, steps=6, seq_len=16):
  c = base_config(steps)
  c.task = ml_collections.ConfigDict(dict(name='bert_pretraining'))
  c.data = ml_collections.ConfigDict(dict(
      name='bert_pretraining', files=corpus, seq_len=seq_len, max_predictions_per_seq=3,
      vocab_size=VOCAB, eval_fraction=0.25))
  c.evals = ml_collections.ConfigDict()
  c.evals.valid = dict(type='pretraining', split='eval', batch_size=4)
  return c


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """A 6-step pre-training run: (workdir, config, its result)."""
  tmp = tmp_path_factory.mktemp('pretrain')
  config = pretrain_config(write_corpus(tmp / 'corpus.txt'))
  workdir = str(tmp / 'run')
  result = trainer.train_and_evaluate(config, workdir, devices=ONE)
  return workdir, config, result


def test_pretraining_trains_evaluates_and_keeps_its_vocabulary(pretrained):
  workdir, config, result = pretrained
  assert result['step'] == 6
  train = result['train']
  assert set(train) >= {'loss', 'mlm_loss', 'mlm_accuracy', 'nsp_loss', 'nsp_accuracy'}
  np.testing.assert_allclose(train['loss'], train['mlm_loss'] + train['nsp_loss'], rtol=1e-5)
  assert train['mlm_loss'] < np.log(VOCAB) + 1.0  # near uniform at worst, not diverging
  valid = result['evals']['valid']
  evaluation = resolved.source(config.data, 'eval', workdir=workdir)
  eval_rows = len(evaluation)  # one row per instance of one walk of each eval document
  assert eval_rows == len(evaluation.instances) and 0 < evaluation.num_documents < 24
  assert valid['num_rows'] == eval_rows and 0 < valid['num_predictions'] <= eval_rows * 3
  assert os.path.exists(os.path.join(workdir, 'vocab.txt'))
  with open(os.path.join(workdir, 'vocab.txt')) as f:
    assert len(f.read().splitlines()) == VOCAB


def test_pretraining_resumes_exactly(pretrained, tmp_path):
  workdir, config, _ = pretrained
  resumed = str(tmp_path / 'resumed')
  trainer.train_and_evaluate(config, resumed, devices=ONE, stop_after=3)
  trainer.train_and_evaluate(config, resumed, devices=ONE)
  assert losses(resumed) == losses(workdir)
  jax.tree.map(np.testing.assert_array_equal, final_params(resumed, config),
               final_params(workdir, config))


def test_second_stage_loads_everything_at_a_longer_length(pretrained, tmp_path):
  workdir, config, _ = pretrained
  stage2 = pretrain_config(config.data.files, steps=2, seq_len=32)  # n = max_len = 32
  stage2.init_from = workdir
  out = str(tmp_path / 'stage2')
  trainer.train_and_evaluate(stage2, out, devices=ONE)
  with open(os.path.join(out, 'vocab.txt')) as a, open(os.path.join(workdir, 'vocab.txt')) as b:
    assert a.read() == b.read()  # a copy of stage 1's, for the runs that start from stage 2
  # Stage 2 reuses stage 1's vocabulary and starts from all of its parameters: with a zero
  # learning rate it would hold them unchanged.
  stage2.optimizer.learning_rate = 1e-30
  frozen = str(tmp_path / 'frozen')
  trainer.train_and_evaluate(stage2, frozen, devices=ONE)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               final_params(frozen, stage2), final_params(workdir, config))


def mnli_config(init_from, steps=4, **model):
  c = base_config(steps)
  c.model.update(model_fields(**model))
  c.task = ml_collections.ConfigDict(dict(name='classification', num_classes=3))
  c.init_from = init_from
  c.data = ml_collections.ConfigDict(dict(name='glue', task='mnli', seq_len=24,
                                          vocab_size=VOCAB))
  c.evals = ml_collections.ConfigDict()
  c.evals.matched = dict(type='classification', split='eval', batch_size=4)
  c.evals.mismatched = dict(type='classification', split='eval', batch_size=4,
                            data=dict(eval_split='validation_mismatched'))
  return c


def test_mnli_fine_tuning_loads_the_encoder_and_evaluates_both_sets(pretrained, tmp_path):
  workdir, config, _ = pretrained
  out = str(tmp_path / 'mnli')
  with tfds.testing.mock_data(num_examples=10):
    result = trainer.train_and_evaluate(mnli_config(workdir), out, devices=ONE)
  assert set(result['evals']) == {'matched', 'mismatched'}
  for evaluation in result['evals'].values():
    assert evaluation['num_rows'] == 10
    assert 0.0 <= evaluation['accuracy'] <= 1.0
  # The classifier starts fresh, the encoder from the pre-trained run: with a zero learning
  # rate the encoder would still be the pre-trained one.
  frozen = mnli_config(workdir, steps=1)
  frozen.optimizer.learning_rate = 1e-30
  with tfds.testing.mock_data(num_examples=10):
    trainer.train_and_evaluate(frozen, str(tmp_path / 'frozen'), devices=ONE)
  tuned = final_params(str(tmp_path / 'frozen'), frozen)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), tuned['encoder'],
               final_params(workdir, config)['encoder'])
  assert set(tuned) == {'encoder', 'classifier'}


@pytest.mark.parametrize('field, value', [('num_heads', 2), ('head_size', 4),
                                          ('emb_dim', 32), ('vocab_size', VOCAB + 1)])
def test_fine_tuning_refuses_another_model_naming_the_field(pretrained, tmp_path, field, value):
  workdir, _, _ = pretrained
  config = mnli_config(workdir, **{field: value})
  with tfds.testing.mock_data(num_examples=10), pytest.raises(UsageError,
                                                              match=f'config.model.{field}='):
    trainer.train_and_evaluate(config, str(tmp_path / 'x'), devices=ONE)


def test_init_from_errors_name_the_field(pretrained, tmp_path):
  workdir, _, _ = pretrained
  with pytest.raises(UsageError, match='config.init_from='):
    with tfds.testing.mock_data(num_examples=10):
      trainer.train_and_evaluate(mnli_config(str(tmp_path / 'nothing')), str(tmp_path / 'a'),
                                 devices=ONE)
  assert not os.path.exists(tmp_path / 'a')  # refused before a vocabulary was trained there
  config = mnli_config(workdir)
  config.init_step = 5
  with pytest.raises(UsageError, match=r'config.init_step=5: no checkpoint of that step .*available: \[6\]'):
    with tfds.testing.mock_data(num_examples=10):
      trainer.train_and_evaluate(config, str(tmp_path / 'b'), devices=ONE)


def test_a_fine_tune_refused_for_its_data_writes_nothing(pretrained, tmp_path):
  """MNLI not prepared (no TFDS data here): one line, and the new workdir is not made (the
  pre-training run's vocabulary is copied there only once the run starts)."""
  workdir, _, _ = pretrained
  config = mnli_config(workdir)
  config.data.data_dir = str(tmp_path / 'no_tfds_data')
  with pytest.raises(UsageError):
    trainer.train_and_evaluate(config, str(tmp_path / 'mnli'), devices=ONE)
  assert not os.path.exists(tmp_path / 'mnli')


def squad_config(init_from, steps=3):
  c = base_config(steps)
  c.task = ml_collections.ConfigDict(dict(name='span_qa'))
  c.init_from = init_from
  c.data = ml_collections.ConfigDict(dict(name='squad', seq_len=32, doc_stride=8,
                                          max_query_len=8, vocab_size=VOCAB))
  c.evals = ml_collections.ConfigDict()
  c.evals.squad = dict(type='squad', split='eval', batch_size=4)
  return c


def squad_records(num, seed=0):
  """Questions about generated contexts, each answer a phrase found at its answer_start."""
  rng = np.random.default_rng(seed)
  records = []
  for i in range(num):
    context = ' '.join(rng.choice(WORDS, 40))
    words = context.split()
    first = int(rng.integers(0, 36))
    answer = ' '.join(words[first:first + 2])
    start = len(' '.join(words[:first])) + (1 if first else 0)
    records.append({'id': f'q{i}', 'title': 't', 'context': context,
                    'question': ' '.join(rng.choice(WORDS, 5)) + ' ?',
                    'answers': {'text': np.array([answer], object),
                                'answer_start': np.array([start], np.int32)}})
  return records


def test_squad_fine_tuning_and_eval_py_write_exact_match_and_f1(pretrained, tmp_path):
  workdir, _, _ = pretrained
  out = str(tmp_path / 'squad')
  records = {'train': squad_records(8), 'validation': squad_records(5, seed=1)}
  with fake_tfds(records):
    result = trainer.train_and_evaluate(squad_config(workdir), out, devices=ONE)
    again = trainer.evaluate(None, out, devices=ONE)
  squad = result['evals']['squad']
  assert squad['num_questions'] == 5 and squad['num_rows'] > 5  # several windows each
  assert 0.0 <= squad['exact_match'] <= squad['f1'] <= 100.0
  assert again['evals'] == result['evals']
  with open(os.path.join(out, 'eval', 'step_3.json')) as f:
    assert json.load(f)['evals']['squad']['f1'] == squad['f1']


def test_fine_tuning_seeds_are_summarised_as_mean_and_spread(pretrained, tmp_path):
  workdir, _, _ = pretrained
  runs = []
  for seed in (0, 1, 2):
    config = mnli_config(workdir, steps=2)
    config.seed = seed
    runs.append(str(tmp_path / f'seed{seed}'))
    with tfds.testing.mock_data(num_examples=10):
      trainer.train_and_evaluate(config, runs[-1], devices=ONE)
  accuracies = []
  for run in runs:
    with open(os.path.join(run, 'metrics.jsonl')) as f:
      accuracies.append([json.loads(line) for line in f][-1]['matched/accuracy'])
  summary = over_seeds.summarize(runs)
  got = summary['metrics']['matched/accuracy']
  mean = sum(accuracies) / 3
  std = (sum((a - mean) ** 2 for a in accuracies) / 2) ** 0.5  # sample spread, n - 1 = 2
  assert got['n'] == 3
  np.testing.assert_allclose([got['mean'], got['std']], [mean, std], rtol=1e-12)
  assert 'matched/num_rows' not in summary['metrics']
  assert [r['seed'] for r in summary['runs']] == [0, 1, 2]
  output = tmp_path / 'summary.json'
  args = ('summarize.py', *runs, f'--output={output}')
  first = cli.run(*args)
  assert first.returncode == 0 and 'matched/accuracy' in first.stdout
  assert json.loads(output.read_text())['metrics']['matched/accuracy']['n'] == 3
  again = cli.run(*args)
  assert again.returncode == 2 and 'exists' in again.stderr
  with pytest.raises(UsageError, match='share seeds'):
    over_seeds.summarize([runs[0], runs[0]])


def test_a_source_without_the_tasks_rows_is_refused_naming_what_is_missing(pretrained, tmp_path):
  workdir, config, _ = pretrained
  wrong = mnli_config(workdir)
  wrong.data = config.data  # pre-training rows: no 'label'
  with pytest.raises(UsageError, match=r"without \['label'\], which task 'classification'"):
    trainer.train_and_evaluate(wrong, str(tmp_path / 'wrong'), devices=ONE)
