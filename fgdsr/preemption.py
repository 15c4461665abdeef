"""Preemption: SIGTERM or SIGINT (Ctrl-C) to a training process -> a training checkpoint at the next step boundary.

Clusters and spot instances stop jobs with SIGTERM and a grace period (Kubernetes: 30 s; Slurm: `--signal`).
`fgdsr.train.train(..., handle_signals=True)` (what `fgdsr train` passes) installs `StopSignals`: the first signal
only sets a flag; the loop finishes the step in flight, writes `out/last` (a complete training checkpoint:
weights, EMA, optimizer, RNG states, data position) and returns with `TrainResult.preempted` set; `fgdsr train`
then prints one line and exits with PREEMPTED_EXIT_CODE. `fgdsr train --resume` continues bit-identically (CPU).
A second signal stops at once (KeyboardInterrupt); checkpoints are written atomically, so none is half-written.

DataLoader workers ignore both signals (fgdsr/data/sampler.py): Ctrl-C reaches the whole process group, and
a worker killed by it would fail the batch the trainer still needs; the trainer shuts them down on exit.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

# EX_TEMPFAIL (sysexits.h): "a temporary failure; the user is invited to retry" -- here with --resume.
# Distinct from 0 (done), 1 (crash) and 2 (bad input, fgdsr.errors.UserError).
PREEMPTED_EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager: while active, SIGTERM / SIGINT set `received` (the signal's name) instead of killing.

    Python delivers signals to the main thread only: elsewhere (a Ray Tune trial thread) it installs nothing
    and `received` stays None.
    """

    def __init__(self, announce: bool = True) -> None:
        self.received: str | None = None
        self.announce = announce
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:  # the second signal: stop now
            self._restore()
            raise KeyboardInterrupt(f"{name} received twice")
        self.received = name
        if self.announce:
            print(
                f"\n{name} received: writing a training checkpoint after this step (send it again to stop now)",
                file=sys.stderr,
                flush=True,
            )
