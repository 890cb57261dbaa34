r"""What the heads of a trained LM attend to, and how much rank they use, on the run's own
held-out rows:

  python analyze.py --workdir=DIR [--num_rows=256] [--step=N] [--ablation_ranks=4,8,16]

For every layer and head: the mean attention entropy (nats), the mean distance |i - j|
weighted by attention, and the share of attention on the last 8 positions, averaged over the
queries of the first --num_rows eval rows (padding left out, as the model masks it). Prints
the table and writes DIR/attention_stats.csv and DIR/attention_stats.png; an existing file
there is replaced only when it is this command's own earlier output.
fixed_head.experiments.attention_stats does the work (its docstring has the definitions).

On the same rows, fixed_head.experiments.logit_rank measures how many dimensions each head's
logits S = Q K^T / sqrt(d_p) use (their singular values: effective rank, rank90, rank99, the
normalised spectrum; DIR/logit_rank.csv) and the eval loss, overall and by target position,
when every head's S is cut to its best rank-r approximation, r in --ablation_ranks
(DIR/rank_ablation.csv); both tables are printed, and the same rule holds for their files.
"""

from absl import app, flags

from fixed_head.experiments import attention_stats, logit_rank
from fixed_head.train import launch

flags.DEFINE_string('workdir', None, 'Workdir of a trained LM run (task lm).')
flags.DEFINE_integer('num_rows', 256, 'Eval rows to average over (fewer if the split has fewer).')
flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
flags.DEFINE_string('ablation_ranks', None,
                    'Comma-separated ranks r <= d_p to cut every head\'s logits to, e.g. 4,8,16; '
                    'd_p itself (no cut) is always run. Default: 4, 8, ... below d_p, and d_p.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  launch.quiet_start()
  f = flags.FLAGS
  ranks = logit_rank.parse_ranks(f.ablation_ranks)
  restored = attention_stats.restore(f.workdir, f.step)
  logit_rank.check(f.workdir, restored[0].model_config, ranks)  # before anything is written
  attention_stats.analyze(f.workdir, num_rows=f.num_rows, step=restored[2])
  logit_rank.analyze(f.workdir, num_rows=f.num_rows, ranks=ranks, restored=restored)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
