"""`fgdsr train --tracking-uri`: one MLflow run in a real sqlite store (params, metric histories, crop grids)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from fgdsr import checkpoint as ck
from orchestrator.cli import app

SETS = dict(depth=1, channels=4, patch_size=32, batch_size=2, val_max_images=2, log_every=2, val_every=4)


def _args(**kw) -> list[str]:
    return [a for k, v in {**SETS, **kw}.items() for a in ("--set", f"{k}={v}")]


def _history(c, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in c.get_metric_history(run_id, key))


@pytest.mark.slow
def test_tracked_run_has_params_histories_and_crop_grids(tmp_path):
    from mlflow import MlflowClient
    from PIL import Image

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    runner = CliRunner()
    r = runner.invoke(app, ["train", *_args(max_steps=8), "--out", str(out), "-q", "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    # resume for 4 more steps: the same run, no step logged twice
    r = runner.invoke(
        app, ["train", *_args(max_steps=12), "--out", str(out), "-q", "--resume", "--tracking-uri", uri]
    )
    assert r.exit_code == 0, r.output

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("fgdsr-train")
    (run,) = c.search_runs([exp.experiment_id])  # one run for the first part and its resume
    assert run.info.status == "FINISHED"
    assert ck.read_meta(out / "last")["mlflow_run_id"] == run.info.run_id
    params = run.data.params
    assert params["max_steps"] == "8" and params["loss"] == "l1" and params["precision"] == "auto"
    assert run.data.tags["precision"] == "fp32" and run.data.tags["resumed_from_step"] == "8"
    rid = run.info.run_id
    for key in ("loss", "l_r", "lr", "it_per_s"):
        steps = [s for s, _ in _history(c, rid, key)]
        assert steps == [2, 4, 6, 8, 10, 12], (key, steps)  # every logged step, each exactly once
    psnr = _history(c, rid, "val_psnr")
    assert [s for s, _ in psnr] == [4, 8, 12] and all(10 < v < 60 for _, v in psnr)
    assert [s for s, _ in _history(c, rid, "val_ssim")] == [4, 8, 12]
    history = ck.load_training_state(out / "last")["extra"]["history"]
    assert [round(v, 9) for _, v in psnr] == [round(h["val_psnr"], 9) for h in history]
    arts = sorted(a.path for a in c.list_artifacts(rid, "val"))
    assert arts == ["val/step_0000004.png", "val/step_0000008.png", "val/step_0000012.png"]
    local = c.download_artifacts(rid, "val/step_0000012.png", str(tmp_path / "dl"))
    grid = np.asarray(Image.open(local))
    # 2 validation images (rows) x HR | bicubic | SR (columns), 4-px white gaps; crops of <= 96 px
    side = (grid.shape[0] - 4) // 2
    assert grid.shape == (2 * side + 4, 3 * side + 8, 3) and 16 <= side <= 96


def test_crop_grid_panels_are_the_images():
    """Row i = central crops of HR | bicubic(LR) | SR of sample i (hand-made arrays)."""
    from fgdsr.inference import BicubicUpscaler
    from fgdsr.train import ValSample
    from orchestrator.train_tracking import GRID_GAP, crop_grid

    rng = np.random.default_rng(0)
    samples = []
    for h, w in ((40, 48), (44, 40)):
        hr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        sr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        samples.append(ValSample("x", rng.random((h // 4, w // 4, 3)), hr, sr))
    g = crop_grid(samples, 4, crop=32)
    assert g.shape == (2 * 32 + GRID_GAP, 3 * 32 + 2 * GRID_GAP, 3) and g.dtype == np.uint8
    s = samples[1]
    y, x = (44 - 32) // 2, (40 - 32) // 2
    top = 32 + GRID_GAP
    assert np.array_equal(g[top:, :32], s.hr[y : y + 32, x : x + 32])
    bic = BicubicUpscaler(4)(s.lr)[y : y + 32, x : x + 32]
    assert np.array_equal(g[top:, 32 + GRID_GAP : 64 + GRID_GAP], bic)
    assert np.array_equal(g[top:, 64 + 2 * GRID_GAP :], s.sr[y : y + 32, x : x + 32])
    assert (g[32:top] == 255).all()  # the gap between the rows
    assert crop_grid(samples, 4, crop=96).shape[0] == 2 * 40 + GRID_GAP  # the smallest image side bounds it


def test_unreachable_tracking_server_is_one_line(tmp_path):
    """Nothing listens on port 9: a one-line error naming the URI, before any training."""
    r = CliRunner().invoke(
        app, ["train", "--out", str(tmp_path / "r"), "--tracking-uri", "http://127.0.0.1:9", "-q"]
    )
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "http://127.0.0.1:9" in lines[0], r.output
    assert not (tmp_path / "r").exists()


def test_without_tracking_options_nothing_is_tracked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["train", *_args(max_steps=2, val_every=2), "--out", "run", "-q"])
    assert r.exit_code == 0, r.output
    assert "mlflow_run_id" not in ck.read_meta(tmp_path / "run" / "last")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
