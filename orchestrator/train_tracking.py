"""`fgdsr train --tracking-uri URI [--experiment NAME]`: one training run as one MLflow run (a training callback).

The run holds: params = the TrainConfig; tags = the resolved precision and device; metrics = the loss terms,
lr and it_per_s of every logged step and val_psnr / val_ssim / best_val_psnr of every validation (the same
names as a Tune trial's run); artifacts = at each validation `val/step_<step>.png`, a crop grid with one row
per validation image (the first two) and the columns HR | bicubic | SR (raw pixels, no resampling).

Metric points are sent when a training checkpoint (`out/last`) has been written, so every point logged is at
or before the step a `--resume` continues from: the resumed run reopens the same MLflow run (its id is in the
checkpoints' meta.json) and never logs a step twice. A run that stops on an error flushes what it has.
Through the same tracking layer as `fgdsr tune` (orchestrator/tracking.py); fgdsr/train.py knows nothing of it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator import tracking

if TYPE_CHECKING:
    from fgdsr.config import TrainConfig
    from fgdsr.train import StartInfo, ValSample

DEFAULT_EXPERIMENT = "fgdsr-train"
RUN_ID_KEY = "mlflow_run_id"  # in the checkpoints' meta.json, as for Tune trials (orchestrator/trainable.py)
GRID_CROP = 96  # HR pixels per side of each crop in the validation grid
GRID_GAP = 4  # white pixels between panels


def _center_crop(img: np.ndarray, y: int, x: int, side: int) -> np.ndarray:
    return img[y : y + side, x : x + side]


def crop_grid(samples: list[ValSample], scale: int, crop: int = GRID_CROP) -> np.ndarray:
    """(rows * crop + gaps, 3 * crop + gaps, 3) uint8: per sample the central crop of HR | bicubic | SR.

    The crop side is the smallest of `crop` and every image's sides, so all rows have the same width.
    """
    from fgdsr.inference import BicubicUpscaler

    side = min([crop] + [min(s.hr.shape[:2]) for s in samples])
    bicubic = BicubicUpscaler(scale)
    rows = []
    for s in samples:
        h, w = s.hr.shape[:2]
        y, x = (h - side) // 2, (w - side) // 2
        panels = [_center_crop(a, y, x, side) for a in (s.hr, bicubic(s.lr), s.sr)]
        gap = np.full((side, GRID_GAP, 3), 255, np.uint8)
        rows.append(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1))
    hgap = np.full((GRID_GAP, rows[0].shape[1], 3), 255, np.uint8)
    out = [rows[0]]
    for r in rows[1:]:
        out += [hgap, r]
    return np.concatenate(out, axis=0)


class TrainTracker:
    """The MLflow run of one `fgdsr train`; a training callback (`on_start`, `on_step`, `on_validation`,
    `on_val_samples`, `on_checkpoint`). `meta` goes into train(meta=...) so a resume finds the run again."""

    def __init__(self, uri: str, run_id: str, scale: int) -> None:
        self.uri, self.run_id, self.scale = uri, run_id, scale
        self.client = tracking.client(uri)
        self._pending: list = []

    @classmethod
    def start(
        cls, uri: str | None, experiment: str, cfg: TrainConfig, out: Path, resume: bool
    ) -> TrainTracker:
        """Open the run: on `resume`, the one named in out/last/meta.json (if any), else a new one."""
        from fgdsr import checkpoint as ck
        from orchestrator.server import check_access

        uri = tracking.resolve_tracking_uri(uri)
        check_access(uri)  # one line when no server answers or the login is refused (MLflow retries minutes)
        run_id = ck.read_meta(out / "last").get(RUN_ID_KEY) if resume else None
        if run_id:
            tracking.init_experiment(uri, experiment)
            tracking.retry(lambda: tracking.client(uri).update_run(run_id, status="RUNNING"))
            return cls(uri, run_id, cfg.scale)
        tags = {"fgdsr.command": "train", "fgdsr.out": str(Path(out).resolve()), "variant": cfg.loss}
        run_id = tracking.standalone_run(uri, experiment, f"{Path(out).name}-{cfg.loss}", tags)
        tracking.log_batch(tracking.client(uri), run_id, params=cfg.to_dict())
        return cls(uri, run_id, cfg.scale)

    @property
    def meta(self) -> dict[str, Any]:
        return {RUN_ID_KEY: self.run_id}

    # ------------------------------------------------------------------------------- training callbacks
    def on_start(self, info: StartInfo) -> None:
        tags = {
            "precision": info.precision.name,
            "precision_reason": info.precision.reason,
            "device": info.device,
            "processes": str(info.processes),
        }
        if info.resumed:
            tags["resumed_from_step"] = str(info.step)
        tracking.log_batch(self.client, self.run_id, tags=tags)

    def _add(self, step: int, values: dict[str, float]) -> None:
        self._pending += tracking.metric_list(values, step)  # NaN is not a point

    def on_step(self, step: int, logs: dict[str, float]) -> None:
        self._add(step, logs)

    def on_validation(self, step: int, metrics: dict[str, float]) -> None:
        self._add(step, metrics)

    def on_val_samples(self, step: int, samples: list[ValSample]) -> None:
        from fgdsr.data.io import write_image

        with tempfile.TemporaryDirectory() as tmp:
            path = write_image(Path(tmp) / f"step_{step:07d}.png", crop_grid(samples, self.scale))
            tracking.log_files(self.uri, self.run_id, [path], "val")

    def on_checkpoint(self, step: int, path: Path) -> None:
        if Path(path).name == "last":
            self.flush()

    # ------------------------------------------------------------------------------- end
    def flush(self) -> None:
        batch, self._pending = self._pending, []
        tracking.log_batch(self.client, self.run_id, metrics=batch)

    def end(self, status: str) -> None:
        """Flush and set the final status: FINISHED, KILLED (preempted: --resume reopens it) or FAILED."""
        try:
            self.flush()
        finally:
            tracking.end_run(self.uri, self.run_id, status)
