"""What `fgdsr pipeline` measured, as frozen records: the renderers (report.md, the terminal) and the tracking
layer read these; `pipeline.json` is `PipelineSummary.to_dict()`.

Methods are named by what they are: `bicubic` and the loss variants compared (`l1` and the best FGD trial's
variant, e.g. `fd`). `baseline`/`candidate` appear only inside the benchmark result (trt.bench's two roles).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from orchestrator.trials import SweepResult, TrialSummary


@dataclass(frozen=True)
class Comparison:
    """The two trials the pipeline compares: the best finished l1 trial and the best finished FGD trial."""

    baseline: TrialSummary  # variant l1
    best_fgd: TrialSummary  # the best of the FGD variants (cs, fd, aux)

    @property
    def variants(self) -> tuple[str, str]:
        return self.baseline.variant, self.best_fgd.variant

    def dirs(self) -> dict[str, str]:
        """variant -> its exported checkpoint folder."""
        return {t.variant: t.checkpoint_dir for t in (self.baseline, self.best_fgd)}


@dataclass(frozen=True)
class Selection:
    """Which images chose the best trials (validation) and which ones the report scores: disjoint when fair."""

    val_dataset: str
    val_images: tuple[str, ...]
    eval_datasets: tuple[str, ...]
    eval_images: tuple[str, ...]
    overlap: tuple[str, ...]  # images in both (selection on scored images: optimistic for the selected)


@dataclass(frozen=True)
class Deployment:
    """Backend choice, ONNX export, complexity and the benchmark (trt's JSON: baseline = l1, candidate = FGD)."""

    backend: str
    reason: str  # why this backend (or why the fallback)
    onnx: dict[str, str]  # variant -> .onnx
    complexity: dict[str, dict[str, Any]]  # variant -> params, weights, mult_adds_true/naive
    benchmark: dict[str, Any]
    method: str  # trt's one-line description of how it was timed
    table: str  # trt's benchmark table (Markdown): the one rendering of the benchmark's rows


@dataclass(frozen=True)
class Evaluation:
    """bicubic and the compared variants through the literature's protocol on the report's data sets."""

    datasets: tuple[str, ...]  # as fgdsr.evaluate names them
    result: dict[str, Any]  # fgdsr.evaluate's JSON
    images: tuple[dict[str, Any], ...]  # dataset, name, entropy, psnr {method: dB}, ssim {method}, delta
    table2: tuple[
        dict[str, Any], ...
    ]  # per method: method (display name), variant, params…, sets {ds: psnr/ssim}
    delta_by_set: dict[str, float | None]  # FGD − baseline mean PSNR per data set


@dataclass(frozen=True)
class FigureData:
    histories: dict[str, list[tuple[int, float]]]  # trial label -> (step, val PSNR)
    fig1: dict[str, dict[str, float]]  # linear fits: baseline, fgd, delta
    fig5: tuple[dict[str, Any], ...]  # the two crops' captions and boxes


@dataclass(frozen=True)
class JobInfo:
    date: str
    machine: str
    command: str
    config: str
    out: str
    scale: int
    data_root: str
    ui_command: str
    ui_url: str  # the experiment's runs table (MLflow's model-training view)
    note: str = ""


@dataclass(frozen=True)
class PipelineSummary:
    job: JobInfo
    sweep: SweepResult
    comparison: Comparison
    selection: Selection
    deployment: Deployment
    evaluation: Evaluation
    figures: FigureData
    below_bicubic: str = ""
    wall_s: float = 0.0
    mlflow_artifacts: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("job", "comparison", "selection", "deployment", "evaluation", "figures"):
            out[name] = dataclasses.asdict(out[name])
        out["sweep"] = self.sweep.to_dict()
        return out
