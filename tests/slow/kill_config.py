"""A small, quick run for the kill / preemption tests: checkpoints every step, async."""

import os

from fixed_head.experiments import sweeps

# configs/default.py by path: this file is loaded by train.py's --config and imported by the
# tests, and the repository's configs/ is no package on either's sys.path.
default = sweeps.load_module(os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'configs',
    'default.py'))


def get_config():
  c = default.get_config('fixed')
  c.num_train_steps = 40
  c.batch_size = 16
  c.data.update(dict(seq_len=8, memory_len=4, support=2, vocab_size=8))
  c.model.update(dict(vocab_size=8, max_len=8, emb_dim=16, num_heads=4, head_size=6,
                      num_layers=1, mlp_dim=32, dropout_rate=0.1, attention_dropout_rate=0.1))
  c.optimizer.update(dict(learning_rate=1e-2, warmup_steps=2))
  c.log_every_steps = 1
  c.eval_every_steps = 0
  c.checkpoint.update(dict(every_steps=1, max_to_keep=3, async_save=True))
  c.evals.valid = dict(type='lm', split='eval', num_examples=32, batch_size=16)
  return c
