"""fixed_head/train/preemption.py: Ctrl-C asks a run to stop at the next step as SIGTERM does,
a second Ctrl-C aborts at once, and the handler found before is restored."""

import os
import signal

import pytest

from fixed_head.train import preemption


def test_ctrl_c_stops_like_sigterm_and_a_second_one_aborts():
  before = signal.getsignal(signal.SIGINT)  # SIG_IGN when run as a background job
  with preemption.PreemptionWatcher() as watcher:
    assert not watcher.reached(1)
    os.kill(os.getpid(), signal.SIGINT)
    assert watcher.reached(2) and watcher.interrupted
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before  # the handler it found, restored
