"""fgdsr's own progress on the terminal: rich bars for a running sweep, read from MLflow.

A background thread polls the sweep's parent run (found by its `fgdsr.sweep` tag) and its child runs every
`every` seconds: one bar per trial (last validated step / max_steps, named like its MLflow run) and one for
finished trials. Nothing here may break the sweep: a failed poll (sqlite busy, server away) is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from orchestrator import tracking

_log = logging.getLogger(__name__)
LABEL = 34  # characters of a trial's run name on its bar (the bar and the counts must fit 80 columns)


def progress_bars(console):
    """A rich `Progress` for fgdsr jobs on `console` (which keeps the terminal while libraries log to a file)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    return Progress(*columns, console=console, transient=False, redirect_stdout=False, redirect_stderr=False)


class SweepProgress:
    """Bars for the trials of sweep `sweep_name` in an existing experiment (context manager).

    The caller creates the experiment first (`tracking.init_experiment`): this thread must never be the one
    that creates a fresh store, racing the driver's schema migration.
    """

    def __init__(self, progress, uri: str, experiment_id: str, sweep_name: str, trials: int, max_steps: int,
                 every: float = 2.0) -> None:  # fmt: skip
        self.progress, self.uri, self.exp_id = progress, uri, experiment_id
        self.name, self.max_steps, self.every = sweep_name, max_steps, every
        self.total = progress.add_task("tune: trials finished", total=trials)
        self.tasks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SweepProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self._poll()
        except Exception as e:
            _log.info("progress: last poll failed: %r", e)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self._poll()
            except Exception as e:  # progress display must never break the sweep (e.g. sqlite busy)
                _log.info("progress: poll failed: %r", e)

    def _poll(self) -> None:
        parent = tracking.find_sweep_run(self.uri, self.exp_id, self.name)
        if parent is None:
            return
        done = 0
        for run in tracking.child_runs(self.uri, self.exp_id, parent):
            rid = run.info.run_id
            hist = tracking.metric_history(self.uri, rid, "val_psnr")
            step = hist[-1][0] if hist else 0
            name = run.info.run_name or run.data.tags.get("trial_id", rid[:6])
            label = f"  {name if len(name) <= LABEL else name[: LABEL - 1] + '…'}"
            if rid not in self.tasks:
                self.tasks[rid] = self.progress.add_task(label, total=self.max_steps)
            psnr = f" {hist[-1][1]:.2f} dB" if hist else ""
            finished = run.info.status in ("FINISHED", "FAILED", "KILLED")
            done += finished
            self.progress.update(self.tasks[rid], completed=self.max_steps if finished else step,
                                 description=f"{label}{psnr} {run.info.status.lower()}")  # fmt: skip
        self.progress.update(self.total, completed=done)


@contextlib.contextmanager
def sweep_bars(progress, plan) -> Iterator[SweepProgress]:
    """Bars for the trials of `plan` (a SweepPlan) while the caller runs it; creates its experiment first."""
    exp_id = tracking.init_experiment(plan.tracking_uri, plan.experiment)
    with SweepProgress(
        progress, plan.tracking_uri, exp_id, plan.name, plan.trials, plan.base.max_steps
    ) as bars:
        yield bars
