"""Shared by the tune tests: a seconds-long sweep (tiny LapSRN, built-in data) as `TuneOptions`."""

from __future__ import annotations

from pathlib import Path

from orchestrator.plan import TuneOptions

TINY_CONFIG = """\
model: lapsrn
scale: 4
depth: 1
channels: 8
loss: l1
train_dataset: builtin-train
val_dataset: builtin-eval
patch_size: 32
class_patch: 8
batch_size: 4
lr: 1.0e-3
lr_schedule: cosine
max_steps: {steps}
val_every: {val_every}
val_max_images: 1
log_every: 1
"""

TINY_SPACE = """\
space:
  loss: {choice: [l1, fd]}
  lr: {loguniform: [5.0e-4, 2.0e-3]}
  bins: 16
asha:
  grace_period: 2
  reduction_factor: 2
"""


def tiny_opts(tmp: Path, steps: int = 8, val_every: int = 4, **kw) -> TuneOptions:
    """Options for a tiny CPU sweep in `tmp` (own sqlite store); `kw` overrides any option."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "tiny.yaml").write_text(TINY_CONFIG.format(steps=steps, val_every=val_every))
    (tmp / "space.yaml").write_text(TINY_SPACE)
    base = dict(
        config=str(tmp / "tiny.yaml"),
        space=str(tmp / "space.yaml"),
        gpus=0,
        num_samples=2,
        search="random",
        scheduler="fifo",
        out=str(tmp / "out"),
        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        experiment="test",
        num_cpus=2,
    )
    base.update(kw)
    return TuneOptions(**base)
