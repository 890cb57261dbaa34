r"""Continues text prompts with a trained LM of a text run (configs/text.py, shakespeare.py,
lm1b.py):

  python sample.py --workdir=/tmp/sweeps/shakespeare/<run> --prompt='HAMLET.\nTo be, or not'
  python sample.py --workdir=DIR --prompt='KING.' --temperature=0.8 --seed=1 --num_samples=3

The run's own tokenizer encodes the prompt (bytes, or the SentencePiece model it trained);
``\n`` in a prompt is a newline. Greedy by default (--temperature=0); the output fills the
model's n = max_len positions unless --num_tokens says fewer. fixed_head.sampling.sample does
the work (see the notebook for runs on token ids, such as the synthetic language).
"""

import jax
import numpy as np
from absl import app, flags

from fixed_head import files
from fixed_head.data import vocab
from fixed_head.errors import UsageError
from fixed_head.sampling import sample
from fixed_head.train import launch, run_record, trainer

flags.DEFINE_string('workdir', None, 'Workdir of a trained text LM run.')
flags.DEFINE_multi_string('prompt', None, 'Text to continue (repeat the flag for several).')
flags.DEFINE_float('temperature', 0.0, '0 = greedy; > 0 samples from softmax(logits / T).')
flags.DEFINE_integer('seed', 0, 'Key of the first sample (temperature > 0); then seed + 1, ...')
flags.DEFINE_integer('num_samples', 1, 'Samples per prompt (temperature > 0).')
flags.DEFINE_integer('num_tokens', None, 'Tokens to add; default: up to the model max_len.')
flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
flags.mark_flags_as_required(['workdir', 'prompt'])


def run_tokenizer(workdir: str):
  """The tokenizer the run trained with, loaded (never trained) from its config."""
  if not files.exists(files.join(workdir, run_record.CONFIG)):
    raise UsageError(f'--workdir={workdir} holds no {run_record.CONFIG}: not the workdir of a '
                     'training run.')
  config = run_record.load_config(workdir)
  if config.data.get('tokenizer') is None:
    raise UsageError(f'{workdir}: its data ({config.data.name!r}) has no text tokenizer; sample '
                     'token ids with fixed_head.sampling.sample (see notebooks/).')
  return vocab.for_run(config, workdir, train=False)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  launch.quiet_start()
  f = flags.FLAGS
  if f.num_samples < 1:
    raise UsageError(f'--num_samples={f.num_samples}: must be at least 1.')
  if f.temperature == 0 and f.num_samples > 1:
    raise UsageError('--num_samples > 1 with --temperature=0 repeats one greedy output; give '
                     '--temperature > 0.')
  tokenizer = run_tokenizer(f.workdir)
  model = trainer.load_model(f.workdir, f.step)
  for text in f.prompt:
    ids = [tokenizer.bos_id] + tokenizer.encode(text.replace('\\n', '\n'))
    if len(ids) >= model.config.max_len:
      raise UsageError(f'--prompt={text!r} is {len(ids)} tokens with the leading BOS; the model '
                       f'takes max_len={model.config.max_len}: give a shorter prompt.')
    num_tokens = model.config.max_len - len(ids) if f.num_tokens is None else f.num_tokens
    try:
      for k in range(f.num_samples):
        key = jax.random.key(f.seed + k) if f.temperature > 0 else None
        out = sample(model, np.asarray([ids], np.int32), num_tokens,
                     temperature=f.temperature, rng=key)
        print(tokenizer.decode(np.asarray(out)[0].tolist()), flush=True)
        print('---', flush=True)
    except ValueError as e:  # a prompt or count the model cannot take, in sample()'s words
      raise UsageError(f'--prompt={text!r}: {e}') from None


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
