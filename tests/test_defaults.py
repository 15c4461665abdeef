"""A fresh machine: every deploy-side command (evaluate, upscale, export, build-engine, import-weights) runs its
bare defaults with no data set anywhere (FGDSR_DATA_ROOT -> an empty folder), falling back to `builtin-eval`
and saying so where a data set is involved."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fgdsr import checkpoint as ck
from fgdsr.config import TrainConfig
from fgdsr.models import build_model
from orchestrator.cli import app


@pytest.fixture
def empty_data_root(tmp_path, monkeypatch):
    root = tmp_path / "no-datasets"
    root.mkdir()
    monkeypatch.setenv("FGDSR_DATA_ROOT", str(root))
    monkeypatch.chdir(tmp_path)  # ./datasets (the other default) does not exist either
    return root


def _ckpt(folder):
    cfg = TrainConfig().replace(depth=1, channels=8, scale=4)
    torch.manual_seed(0)
    return ck.save_model_checkpoint(folder, build_model(cfg), cfg)


def _ok(args):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.slow
def test_bare_defaults_run_without_any_data_set(empty_data_root, tmp_path):
    # evaluate: no arguments at all -> bicubic on builtin-eval, and it says so (stderr; stdout stays the table)
    r = _ok(["evaluate", "--max-images", "1"])
    assert "no --dataset given; using builtin-eval" in r.stderr and "builtin-eval" in r.stdout
    c = _ckpt(tmp_path / "ckpt")
    r = _ok(["evaluate", "--checkpoint", str(c), "--max-images", "1", "--json"])
    assert json.loads(r.stdout)["results"][0]["dataset"] == "builtin-eval"
    # upscale: only the required image, checkpoint and output folder
    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(tmp_path / "p.png")
    _ok(["upscale", str(tmp_path / "p.png"), "--checkpoint", str(c), "--out", str(tmp_path / "up")])
    assert (tmp_path / "up" / "p_x4.png").is_file()
    # export: only the checkpoint and --out (its parity check uses random images, no data set)
    _ok(["export", str(c), "--out", str(tmp_path / "m.onnx")])
    # build-engine: runs where TensorRT is; here it ends in one line naming the extra, not a traceback
    r = CliRunner().invoke(
        app, ["build-engine", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "m.engine")]
    )
    if importlib.util.find_spec("tensorrt") is None:
        assert r.exit_code == 2 and r.output.count("\n") == 1 and "tensorrt is not installed" in r.output
    else:
        assert r.exit_code in (0, 2) and "Traceback" not in r.output
    # import-weights: a (synthetic) authors' .mat file and --out
    from test_matconvnet import write_lapsrn_mat

    write_lapsrn_mat(tmp_path / "LapSRN_x4.mat")
    _ok(["import-weights", str(tmp_path / "LapSRN_x4.mat"), "--out", str(tmp_path / "imported")])
    assert list(empty_data_root.iterdir()) == []  # nothing was downloaded or written there
