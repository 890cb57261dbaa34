r"""The paper's BERT setup (docs/paper.md, "BERT pre-training and fine-tuning"): pre-training
in two stages, then MNLI and SQuAD v1.1 fine-tuning, for each column of Tables 1-3.

  # Pre-training, stage 1: 450k steps at n = 128; trains the vocabulary (PT1/vocab.txt).
  python train.py --config=configs/bert.py:fixed_d512_h32 --workdir=PT1
  # Stage 2: 50k steps at n = 512, every parameter loaded from stage 1, a new warm-up.
  python train.py --config=configs/bert.py:fixed_d512_h32,stage=2 --workdir=PT2 \
    --config.init_from=PT1
  # Fine-tuning: the encoder loaded from stage 2, the task head new; several seeds, then the
  # mean +- std of each evaluation metric over them.
  for s in 0 1 2 3 4; do
    python train.py --config=configs/bert.py:fixed_d512_h32,task=mnli --workdir=MNLI_$s \
      --config.init_from=PT2 --config.seed=$s --config.data.shuffle_seed=$s
    python train.py --config=configs/bert.py:fixed_d512_h32,task=squad --workdir=SQUAD_$s \
      --config.init_from=PT2 --config.seed=$s --config.data.shuffle_seed=$s
  done
  python summarize.py MNLI_*     # matched / mismatched accuracy
  python summarize.py SQUAD_*    # exact match and F1

The argument is a column (below) followed by optional comma-separated ``stage=1|2``
(pre-training only; default 1), ``task=pretrain|mnli|squad`` (default pretrain) and
``runlocal``. ``--config.init_from`` is required by stage 2 and by fine-tuning: the config
holds a placeholder there that is no workdir (``INIT_FROM_UNSET``), so a command without it
stops at once with one line naming the field (``--config.init_from=None`` trains from a
random initialisation, if that is really what is meant). Stage 2 loads every parameter of the run it names (the
position table already has 512 rows, as ``max_len`` is 512 from the start); fine-tuning loads
its encoder and starts the classifier / span head fresh. Both must keep that run's model
fields, which the column fixes, and its vocabulary, which they read from
``init_from/vocab.txt`` (every workdir keeps a copy of the vocabulary it used). The paper's
setup is Google's uncased vocab.txt (30,522 entries), given to stage 1 with
``--config.data.vocab=.../uncased_L-24_H-1024_A-16/vocab.txt``; without it (the offline
default) stage 1 trains a WordPiece vocabulary of that size on the corpus (docs/bert.md).

Columns, with ``fixed_head.accounting.count_params`` (embeddings, encoder, pooler, masked-LM
and next-sentence heads; Google's 30,522-token vocabulary) next to the paper's count:

  column             table  d     h   d_p         count_params  paper
  large_h8           1      1024  8   128 (d/h)    336,226,108   336M
  large_h16          1      1024  16  64 (d/h)     336,226,108   336M
  large_h32          1      1024  32  32 (d/h)     336,226,108   336M
  fixed_d512_h8      2A     512   8   128          167,690,044   168M
  fixed_d512_h12     2A     512   12  128          192,892,732   193M
  fixed_d512_h16     2A     512   16  128          218,095,420   218M
  fixed_d512_h32     2A     512   32  128          318,906,172   319M
  fixed_d512_dp32    2B     512   8   32           129,886,012   130M
  fixed_d512_dp64    2B     512   8   64           142,487,356   142M
  fixed_d512_dp128   2B     512   8   128          167,690,044   168M  (= fixed_d512_h8)
  fixed_d512_dp256   2B     512   8   256          218,095,420   218M
  fixed_d768_h8      3      768   8   128          214,053,692   214M
  fixed_d768_h12     3      768   12  128          251,839,292   252M
  fixed_d768_h16     3      768   16  128          289,624,892   290M
  fixed_d768_h20     3      768   20  128          327,410,492   327M

The model is ``fixed_head.paper.bert_config(d, h, d_p)``: 24 layers, feed-forward 4096 (3072
at d = 768), post-LN, GELU, 512 learned positions, dropout 0.1, as Google BERT's
modeling.py.

What the paper states, the choices made where it is silent (optimizer, masking, the TPU
settings below, the data and vocabulary, the fine-tuning recipes and their step counts) and
why: docs/bert.md. In short: Google BERT's AdamWeightDecayOptimizer (``'bert_adamw'``: Adam
without bias correction, decoupled weight decay) at 1e-4 with its linear warm-up and decay over
all the steps (``'bert'``), batch 1024, stage 1 at n = 128 and stage 2 at n = 512
(``PRETRAIN_STAGES``); blocks under ``nnx.scan``, parameters and Adam's moments split over the
devices (``mesh.fsdp=-1``), stage 2 recomputed in the backward pass (``model.remat='full'``).
``python compile.py --config=... --topology=...``
says whether a column fits a TPU slice before it is rented (on v5e, stage 1 of every column fits on
32 chips, fixed_d512_h32 on 64, and stage 2 on 16; v4 and v5p in BENCHMARKS.md).

runlocal: the same code in a minute or two on a CPU, to check a setup end to end (the numbers
mean nothing): every width divided by 8, 2 layers, a 512-token vocabulary trained on this
repository's README.md and docs/*.md; MNLI and SQuAD read small slices of their TFDS
datasets (``python prepare.py glue/mnli squad``, or ``--fake_sources``
offline). Chain them as the full runs, with ``,runlocal`` added to each ``--config`` and
``--config.init_from`` pointing at the runlocal workdirs.
"""

import math
import os

import ml_collections

from fixed_head import paper
from fixed_head.train import run_config

# name -> (table, d, h, d_p or None for the baseline d / h)
COLUMNS = {
    'large_h8': ('Table 1', 1024, 8, None),
    'large_h16': ('Table 1', 1024, 16, None),
    'large_h32': ('Table 1', 1024, 32, None),
    'fixed_d512_h8': ('Table 2A', 512, 8, 128),
    'fixed_d512_h12': ('Table 2A', 512, 12, 128),
    'fixed_d512_h16': ('Table 2A', 512, 16, 128),
    'fixed_d512_h32': ('Table 2A', 512, 32, 128),
    'fixed_d512_dp32': ('Table 2B', 512, 8, 32),
    'fixed_d512_dp64': ('Table 2B', 512, 8, 64),
    'fixed_d512_dp128': ('Table 2B', 512, 8, 128),  # the same model as fixed_d512_h8
    'fixed_d512_dp256': ('Table 2B', 512, 8, 256),
    'fixed_d768_h8': ('Table 3', 768, 8, 128),
    'fixed_d768_h12': ('Table 3', 768, 12, 128),
    'fixed_d768_h16': ('Table 3', 768, 16, 128),
    'fixed_d768_h20': ('Table 3', 768, 20, 128),
}
STAGES = (1, 2)
TASKS = ('pretrain', 'mnli', 'squad')


def _published_millions(d: int, h: int, dp: int | None) -> int:
  """The paper's count in millions. Table 1 gives one count (336M) for its three head
  counts: a baseline's parameters do not depend on h."""
  for _, pd, ph, pdp, count in paper.PUBLISHED_BERT_PARAMS:
    if (pd, pdp) == (d, dp) and (ph == h or dp is None):
      return count // 1_000_000
  raise KeyError((d, h, dp))


# name -> the paper's parameter count, in millions
PUBLISHED_PARAMS = {name: _published_millions(d, h, dp) for name, (_, d, h, dp) in
                    COLUMNS.items()}

# Pre-training stage -> (n, max_predictions_per_seq, steps, warm-up steps)
PRETRAIN_STAGES = {1: (128, 20, 450_000, 5_000), 2: (512, 80, 50_000, 3_000)}
PRETRAIN_BATCH = 1024
# model.remat a pre-training stage chooses: stage 1 fits without recomputation; stage 2
# (n = 512) recomputes each block in the backward pass (about a third more compute).
PRETRAIN_REMAT = {1: 'none', 2: 'full'}
FINETUNE_BATCH = 32
MNLI_TRAIN_EXAMPLES = 392_702
MNLI_EPOCHS = 3
SQUAD_TRAIN_FEATURES = 88_641  # windows of 384 with stride 128, Google's uncased vocabulary
SQUAD_EPOCHS = 2
WARMUP_FRACTION = 0.1  # fine-tuning warm-up, as run_classifier.py / run_squad.py
WIKIPEDIA = 'wikipedia/20230601.en'

# runlocal: widths divided by RUNLOCAL_SHRINK, 2 layers, 64 positions, a 512-token vocabulary.
RUNLOCAL_SHRINK = 8
RUNLOCAL_MAX_LEN = 64
RUNLOCAL_VOCAB_SIZE = 512
RUNLOCAL_BATCH = 16
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNLOCAL_FILES = [os.path.join(REPO, 'README.md'), os.path.join(REPO, 'docs', '*.md')]


def _usage(arg: str, message: str) -> ValueError:
  return ValueError(f'configs/bert.py:{arg}: {message} The argument is '
                    '<column>[,stage=1|2][,task=pretrain|mnli|squad][,runlocal]; the columns '
                    f'are {", ".join(COLUMNS)}.')


def parse_arg(arg: str) -> tuple[str, dict]:
  """'fixed_d512_h32,stage=2,runlocal' -> ('fixed_d512_h32',
  {'stage': 2, 'task': 'pretrain', 'runlocal': True})."""
  column, *items = arg.split(',')
  if column not in COLUMNS:
    raise _usage(arg, f'{column!r} is not a column.')
  options, seen = dict(stage=1, task='pretrain', runlocal=False), set()
  for item in items:
    key, eq, value = item.partition('=')
    if key in seen:
      raise _usage(arg, f'{key!r} is given twice.')
    seen.add(key)
    if item == 'runlocal':
      options['runlocal'] = True
    elif key == 'stage' and eq and value in [str(stage) for stage in STAGES]:
      options['stage'] = int(value)
    elif key == 'task' and eq and value in TASKS:
      options['task'] = value
    else:
      raise _usage(arg, f"'{item}' is not stage=1|2, task=pretrain|mnli|squad or runlocal.")
  if options['stage'] != 1 and options['task'] != 'pretrain':
    raise _usage(arg, f"stage={options['stage']} is a pre-training stage; fine-tuning "
                 f"(task={options['task']}) starts from the stage-2 run via "
                 '--config.init_from.')
  return column, options


def model_fields(column: str, runlocal: bool = False) -> dict:
  """config.model of a column: the paper's BERT, or its runlocal miniature; its blocks
  scanned (one compiled block whatever the depth; the stages and fine-tuning share it)."""
  _, d, h, dp = COLUMNS[column]
  if not runlocal:
    return paper.bert_config(d, h, dp, scan_layers=True).to_dict()
  small_d = d // RUNLOCAL_SHRINK
  return paper.bert_config(
      small_d, h, None if dp is None else dp // RUNLOCAL_SHRINK, num_layers=2,
      mlp_dim=4 * small_d, max_len=RUNLOCAL_MAX_LEN, vocab_size=RUNLOCAL_VOCAB_SIZE,
      scan_layers=True).to_dict()


def _optimizer(c, learning_rate: float, warmup_steps: int) -> None:
  # Google BERT's optimization.py: AdamWeightDecayOptimizer with its settings, and
  # create_optimizer's warm-up and linear decay to 0 over all num_train_steps.
  c.optimizer.update(dict(name='bert_adamw', learning_rate=learning_rate, schedule='bert',
                          warmup_steps=warmup_steps, weight_decay=0.01, b1=0.9, b2=0.999,
                          eps=1e-6, grad_clip_norm=1.0, weight_decay_mode='decoupled'))


def _wordpiece_fields(data, runlocal: bool) -> None:
  # None: the init_from run's vocab.txt, else the workdir's, else one trained on the corpus.
  data.vocab = ml_collections.config_dict.placeholder(str)
  data.vocab_size = RUNLOCAL_VOCAB_SIZE if runlocal else paper.BERT_VOCAB_SIZE
  data.lower_case = True  # uncased, as Google's uncased vocab.txt
  data.data_dir = ml_collections.config_dict.placeholder(str)  # None: $TFDS_DATA_DIR, ...
  data.shuffle_seed = 0  # the order of the train examples (and pre-training's row draws)


def _pretraining(c, stage: int, runlocal: bool) -> None:
  seq_len, max_predictions, steps, warmup = PRETRAIN_STAGES[stage]
  c.task.name = 'bert_pretraining'
  d = c.data
  d.name = 'bert_pretraining'  # fixed_head/data/bert_pretraining.py
  d.seq_len = seq_len
  d.max_predictions_per_seq = max_predictions
  d.masked_lm_prob = 0.15
  d.short_seq_prob = 0.1
  # How a TFDS record's text is cut into sentences (fixed_head/data/sentences.py): pysbd, as
  # Google's input has one real sentence a line; 'regex' is the old, faster cut.
  d.sentence_splitter = 'pysbd'
  # Instances as Google's create_pretraining_data.py (fixed_head/data/bert_instances.py): each
  # train document walked dupe_factor times, as many instances per walk as its length gives.
  d.dupe_factor = 10
  # 'dynamic': each instance masked anew every epoch (RoBERTa found it no worse than static);
  # 'static': masked once, as Google's files written once (each walk differently).
  d.masks = 'dynamic'
  # Where the instance counts of a TFDS corpus are kept (a directory, local or gs://): the
  # first run reads and tokenises every document once to count them (English Wikipedia: hours),
  # later runs with the same corpus and vocabulary (a resume, stage 2) read the counts. None:
  # counted at every start.
  d.index_dir = ml_collections.config_dict.placeholder(str)
  _wordpiece_fields(d, runlocal)
  # Exactly one of dataset (TFDS names) and files (globs of local text); typed `object` so
  # that --config.data.dataset=None --config.data.files='/corpus/*.txt' parse.
  d.dataset = ml_collections.config_dict.FieldReference([WIKIPEDIA], field_type=object)
  d.files = ml_collections.config_dict.placeholder(object)
  d.train_split = 'train[:99%]'  # wikipedia has only 'train'
  # None (--config.data.eval_split=None): hold out the last data.eval_fraction of each
  # train_split instead.
  d.eval_split = ml_collections.config_dict.FieldReference('train[99%:]', field_type=object)
  c.batch_size = PRETRAIN_BATCH
  c.num_train_steps = steps
  # What fits (BENCHMARKS.md, "What fits on a TPU slice"): at n = 512 the [b, h, n, n]
  # attention of 24 layers does not fit without recomputing each block in the backward pass.
  c.model.remat = PRETRAIN_REMAT[stage]
  _optimizer(c, 1e-4, warmup)
  c.log_every_steps = 100
  c.eval_every_steps = 10_000
  c.checkpoint.every_steps = 10_000
  c.evals.valid = dict(type='pretraining', split='eval', num_examples=8192, batch_size=256)
  if runlocal:
    d.seq_len = {1: RUNLOCAL_MAX_LEN // 2, 2: RUNLOCAL_MAX_LEN}[stage]  # 32, then 64
    d.max_predictions_per_seq = math.ceil(d.seq_len * d.masked_lm_prob)  # 5, then 10
    d.dataset = None
    d.files = list(RUNLOCAL_FILES)
    d.eval_fraction = 0.2  # of some 130 paragraph "documents": an eval row per instance
    d.train_split = 'train'
    d.eval_split = None
    c.num_train_steps = 200 // stage
    c.optimizer.warmup_steps = c.num_train_steps // 10
    c.evals.valid = dict(type='pretraining', split='eval', batch_size=RUNLOCAL_BATCH)


def _finetuning(c, task: str, runlocal: bool) -> None:
  d = c.data
  c.evals = ml_collections.ConfigDict()
  if task == 'mnli':
    c.task = ml_collections.ConfigDict(dict(name='classification', num_classes=3))
    d.name = 'glue'  # fixed_head/data/glue.py
    d.task = 'mnli'
    d.seq_len = 128
    _wordpiece_fields(d, runlocal)
    d.train_split = 'train'
    d.eval_split = 'validation_matched'
    steps = int(MNLI_TRAIN_EXAMPLES / FINETUNE_BATCH * MNLI_EPOCHS)
    epoch = MNLI_TRAIN_EXAMPLES // FINETUNE_BATCH
    learning_rate = 2e-5
    c.evals.matched = dict(type='classification', split='eval', batch_size=256)
    c.evals.mismatched = dict(type='classification', split='eval', batch_size=256,
                              data=dict(eval_split='validation_mismatched'))
  else:
    c.task = ml_collections.ConfigDict(dict(name='span_qa'))
    d.name = 'squad'  # fixed_head/data/squad.py
    d.seq_len = 384
    d.doc_stride = 128
    d.max_query_len = 64
    _wordpiece_fields(d, runlocal)
    d.train_split = 'train'
    d.eval_split = 'validation'
    steps = int(SQUAD_TRAIN_FEATURES / FINETUNE_BATCH * SQUAD_EPOCHS)
    epoch = SQUAD_TRAIN_FEATURES // FINETUNE_BATCH
    learning_rate = 3e-5
    # The whole split (num_examples None): it counts windows, and a cap would cut questions.
    c.evals.squad = dict(type='squad', split='eval', batch_size=256, max_answer_length=30,
                         n_best=20)
  c.batch_size = FINETUNE_BATCH
  c.num_train_steps = steps
  _optimizer(c, learning_rate, int(WARMUP_FRACTION * steps))
  c.log_every_steps = 100
  c.eval_every_steps = epoch  # after every epoch (and at the end)
  c.checkpoint.every_steps = 2_000
  c.checkpoint.max_to_keep = 2
  if runlocal:
    d.seq_len = RUNLOCAL_MAX_LEN
    d.train_split = 'train[:2000]'
    if task == 'mnli':
      d.eval_split = 'validation_matched[:500]'
      c.evals.mismatched.data.eval_split = 'validation_mismatched[:500]'
    else:
      d.doc_stride = 32
      d.max_query_len = 16
      d.eval_split = 'validation[:300]'
    for spec in c.evals.values():
      spec.batch_size = 64
    c.num_train_steps = 200
    c.optimizer.warmup_steps = int(WARMUP_FRACTION * c.num_train_steps)


# What stage 2 and fine-tuning hold in init_from until --config.init_from names a run.
INIT_FROM_UNSET = '<set --config.init_from to the workdir of the run to start from>'


def get_config(arg: str = 'fixed_d512_h32'):
  column, options = parse_arg(arg)
  runlocal = options['runlocal']
  c = run_config.defaults()
  c.seed = 0
  c.batch_tokens = None  # the batch is given in rows
  # Parameters and Adam's moments split over every device (fsdp), each device its own rows.
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
  # The column's model; fine-tuning keeps it (it must match the pre-trained run).
  c.model.update(model_fields(column, runlocal))
  # Stage 2 and fine-tuning start from another run, which the command line names: until it
  # does, init_from holds a name that is no workdir, and the run stops at once saying so.
  c.init_from = (None if options['task'] == 'pretrain' and options['stage'] == 1
                 else INIT_FROM_UNSET)
  if options['task'] == 'pretrain':
    _pretraining(c, options['stage'], runlocal)
  else:
    _finetuning(c, options['task'], runlocal)
  # One value: the model reads the vocabulary's size from the data (set either field).
  c.model.vocab_size = c.data.get_ref('vocab_size')
  if runlocal:
    c.batch_size = RUNLOCAL_BATCH
    c.optimizer.learning_rate = 1e-3
    c.log_every_steps = 20
    c.eval_every_steps = 100
    c.checkpoint.every_steps = 100
  return c
