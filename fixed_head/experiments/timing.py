"""What every benchmark in benchmarks/ shares: its header (machine, devices, versions, date,
command), medians of repeated timings run round-robin, the matmul ceiling that every MFU
figure divides by, and the peak memory XLA plans for a compiled program.

Timings are wall seconds of a function that returns JAX arrays, blocked until ready. A
benchmark measures its reference in the same process and reports ratios, which hold on a
noisy machine where absolute times do not.
"""

from __future__ import annotations

import datetime
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from fixed_head.experiments import figures


def devices() -> str:
  """'1 x cpu' or '1 x NVIDIA H200': the local devices JAX computes on."""
  local = jax.local_devices()
  return f'{len(local)} x {local[0].device_kind}'


def header(command: str | None = None) -> str:
  """One line: machine | devices | jax and flax versions | date and time | command."""
  import flax  # pylint: disable=g-import-not-at-top
  command = command or 'python ' + ' '.join(sys.argv)
  now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  return (f'{figures.machine()} | {devices()} | jax {jax.__version__}, flax '
          f'{flax.__version__} | {now} | {command}')


def on_gpu() -> bool:
  return jax.default_backend() == 'gpu'


def seconds(fn: Callable[[], Any]) -> float:
  """Wall seconds of ``fn()``, blocking on the arrays it returns."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def round_robin(fns: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 1
                ) -> dict[str, list[float]]:
  """Seconds of each function over ``repeats`` rounds, after ``warmup`` untimed calls each
  (compilation). The functions take turns within a round, so a burst of load from other
  processes hits all of them alike, and each round starts one function later than the last,
  so each follows every other equally often (what ran just before changes the caches)."""
  if repeats < 1:
    raise ValueError(f'repeats={repeats} must be at least 1.')
  for fn in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn())
  times: dict[str, list[float]] = {name: [] for name in fns}
  names = list(fns)
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
      times[name].append(seconds(fns[name]))
  return times


def median(values: Sequence[float]) -> float:
  return statistics.median(values)


def matmul_flops(size: int, dtype: str = 'float32', *, repeats: int = 5,
                 chain: int = 4) -> float:
  """FLOP/s of [size, size] @ [size, size] in ``dtype`` (median over ``repeats``): ``chain``
  dependent products in one program, so dispatch is amortised as in a train step."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  a = (a / jnp.sqrt(size)).astype(dtype)  # keeps the chained products bounded

  @jax.jit
  def products(x):
    for _ in range(chain):
      x = x @ a
    return x

  times = round_robin({'matmul': lambda: products(a)}, repeats=repeats)['matmul']
  return chain * 2 * size ** 3 / median(times)


def ceiling_sizes() -> tuple[int, ...]:
  """Matrix sizes tried for the ceiling: big enough to saturate this backend's matmul."""
  return (2048, 4096, 8192) if on_gpu() else (512, 1024, 2048)


def matmul_ceiling(dtype: str = 'float32', *, repeats: int = 5) -> float:
  """The best matmul FLOP/s over ``ceiling_sizes()``: the denominator of MFU."""
  return max(matmul_flops(size, dtype, repeats=repeats) for size in ceiling_sizes())


def peak_bytes(compiled: Any) -> int | None:
  """Bytes XLA plans to hold at once for a compiled program (its temporaries, arguments
  and outputs, less the outputs that alias donated arguments); None where the backend does
  not say."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
          + analysis.output_size_in_bytes - analysis.alias_size_in_bytes)


def si(value: float, unit: str = '') -> str:
  """1.23e9 -> '1.23 G' + unit (k, M, G, T)."""
  for scale, prefix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(value) >= scale:
      return f'{value / scale:.3g} {prefix}{unit}'
  return f'{value:.3g} {unit}'.rstrip()


def mib(num_bytes: int | None) -> str:
  return '-' if num_bytes is None else f'{num_bytes / 2 ** 20:,.1f}'
