"""What a sweep produced: one `TrialSummary` per trial and the `SweepResult` that alone selects trials.

`SweepResult.best(variant=None, finished=True)` is the one best-trial rule: the highest best validation PSNR
among the trials of `variant` (a name, several names, or any) that finished (TERMINATED: ran all its steps or
was stopped early by the scheduler). An ERROR trial is never "best" unless a caller asks `finished=False`, and
then it is reported, not exported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.plan import SweepPlan


@dataclass(frozen=True)
class TrialSummary:
    trial_id: str
    name: str  # Tune's trial name
    config: dict[str, Any]  # the sampled fields
    variant: str  # the loss
    state: str  # TERMINATED (finished or early-stopped) | ERROR | RUNNING | PENDING | PAUSED
    steps: int
    val_psnr: float | None  # last reported
    val_ssim: float | None
    best_val_psnr: float | None
    best_val_ssim: float | None
    best_step: int | None
    checkpoint: str | None  # the trial's best checkpoint directory (a local path or a storage URI)
    mlflow_run_id: str | None
    error: str | None = None
    exported: str | None = None  # <out>/best-<variant> when this trial is its variant's best (a local dir)
    label: str = ""  # `fd α=0.12 lr=2e-3`: the variant and the sampled values (the MLflow run name)

    @property
    def finished(self) -> bool:
        return self.state == "TERMINATED"

    @property
    def checkpoint_dir(self) -> str | None:
        """A local checkpoint folder: the exported copy, else the checkpoint itself."""
        return self.exported or self.checkpoint


@dataclass(frozen=True)
class SweepResult:
    plan: SweepPlan
    trials: tuple[TrialSummary, ...] = ()
    parent_run_id: str | None = None
    experiment_id: str | None = None
    partial: bool = False  # the sweep was interrupted: some trials never finished
    stopped_by: str | None = None  # "SIGTERM" when that signal stopped the driver (orchestrator.tune)
    dry_run: bool = False
    best_dir: str | None = None  # <out>/best: a copy of best()'s checkpoint
    registered: str | None = None  # "<model name>/<version>"
    analysis: dict[str, Any] = field(default_factory=dict)  # orchestrator.analysis.SweepAnalysis.to_dict()
    wall_s: float = 0.0

    @property
    def tracking_uri(self) -> str:
        return self.plan.tracking_uri

    def best(self, variant: str | Sequence[str] | None = None, finished: bool = True) -> TrialSummary | None:
        """The trial with the highest best validation PSNR (of `variant`; finished ones only by default)."""
        names = None if variant is None else {variant} if isinstance(variant, str) else set(variant)
        cands = [
            t
            for t in self.trials
            if t.best_val_psnr is not None
            and (names is None or t.variant in names)
            and (t.finished or not finished)
        ]
        return max(cands, key=lambda t: t.best_val_psnr) if cands else None

    def variants(self) -> list[str]:
        return sorted({t.variant for t in self.trials})

    def to_dict(self) -> dict[str, Any]:
        """JSON view (`sweep.json`, `fgdsr tune --json`): the plan as a dict, `best` = best() as a dict."""
        best = self.best()
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["plan"] = self.plan.to_dict()
        out["trials"] = [dataclasses.asdict(t) for t in self.trials]
        out["best"] = dataclasses.asdict(best) if best else None
        out["tracking_uri"] = self.tracking_uri
        out["experiment_path"] = self.plan.experiment_path
        return out
