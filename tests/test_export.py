"""ONNX export: symbolic dims, ORT parity at two sizes for l1/cs/fd/aux, FP16, sidecar, CLI and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from fgdsr.config import load_config
from fgdsr.errors import UserError
from fgdsr.models import build_model
from orchestrator.cli import app
from trt.export import FP32_TOL, bin_agreement, check_symbolic, export_onnx, ort_session
from trt.sidecar import read_sidecar, sha256_path, sidecar_path

TINY = {"depth": 2, "channels": 8}


def tiny_model(loss: str, seed: int = 0):
    cfg = load_config(None, {"loss": loss, **TINY})
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    if loss in ("cs", "fd"):
        # random (not zero-init) head weights, so the K-bin classifier really decides at export
        for p in model.heads.parameters():
            torch.nn.init.normal_(p, std=0.05)
    return model, cfg


def test_bin_agreement_by_hand():
    a = np.array([0.0, 0.031, 0.5, 0.999, 1.0])
    b = np.array([0.0, 0.032, 0.49, 0.999, 1.2])  # K=32: bins 0,0,16,31,31 vs 0,1,15,31,31 (clipped)
    assert bin_agreement(a, b, 32) == pytest.approx(3 / 5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """l1, cs, fd, aux tiny models exported once: loss -> (model, onnx path, returned sidecar)."""
    out = {}
    for loss in ("l1", "cs", "fd", "aux"):
        folder = tmp_path_factory.mktemp(loss)
        model, cfg = tiny_model(loss)
        path = folder / f"{loss}.onnx"
        out[loss] = (model, path, export_onnx(model, path, cfg, source_sha256="abc", source="tiny"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["l1", "cs", "fd", "aux"])
def test_export_symbolic_and_parity(exported, loss):
    model, out, meta = exported[loss]
    # one self-contained file (no external data) + its sidecar, symbolic batch/height/width
    assert sorted(p.name for p in out.parent.iterdir()) == [f"{loss}.onnx", f"{loss}.onnx.json"]
    dims = check_symbolic(out)
    assert isinstance(dims[0], str) and dims[1] == 1 and isinstance(dims[2], str) and isinstance(dims[3], str)
    checks = meta["parity"]["checks"]
    assert len(checks) == 2 and checks[0]["lr_hw"] != checks[1]["lr_hw"]
    assert all(c["max_abs_err"] < FP32_TOL for c in checks)
    # the sidecar on disk is what was returned, with the fields
    side = read_sidecar(out, "onnx")
    assert side == json.loads(json.dumps(meta)) | {"format": 1, "kind": "onnx"}
    assert side["variant"] == loss and side["scale"] == 4 and side["precision"] == "fp32"
    assert side["input_names"] == ["lr"] and side["output_names"] == ["sr"]
    assert side["onnx_sha256"] == sha256_path(out) and side["source_sha256"] == "abc"
    # a third size, batch 3, run fresh: output (N, 1, 4h, 4w) equals torch
    x = torch.rand(3, 1, 21, 45)
    got = ort_session(out).run(["sr"], {"lr": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == (3, 1, 84, 180)
    assert np.abs(got - ref).max() < FP32_TOL


@pytest.mark.slow
def test_fd_graph_holds_class_module_and_argmax(exported):
    ops = {n.op_type for n in onnx.load(str(exported["fd"][1])).graph.node}
    assert {"ArgMax", "Tanh"} <= ops  # hard bin + bounded offset in the graph
    assert any(op.startswith("Gather") for op in ops)  # the Class-Module's half-width table lookup


@pytest.mark.slow
def test_aux_graph_is_the_baseline_graph(exported):
    """aux must cost exactly what l1 costs: the exported graphs have the same ops and weight shapes."""
    graphs = {}
    for loss in ("l1", "aux"):
        g = onnx.load(str(exported[loss][1])).graph
        graphs[loss] = ([n.op_type for n in g.node], sorted(tuple(i.dims) for i in g.initializer))
    assert graphs["aux"] == graphs["l1"]


@pytest.mark.slow
def test_fp16_export_has_fp16_weights_fp32_io(tmp_path):
    model, cfg = tiny_model("fd")
    out = tmp_path / "fd16.onnx"
    meta = export_onnx(model, out, cfg, precision="fp16")
    g = onnx.load(str(out)).graph
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert g.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_weights = [i for i in g.initializer if len(i.dims) == 4 and i.name.endswith("weight")]
    assert conv_weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_weights)
    for c in meta["parity"]["checks"]:  # reported, not asserted tight: fp16 rounding can move a bin
        assert c["max_abs_err"] < 0.1 and c["bin_agreement"] > 0.9
    assert meta["precision"] == "fp16" and meta["parity"]["tolerance"] is None


def test_static_dims_are_rejected(tmp_path):
    """The exporter may specialise shapes silently; check_symbolic must catch a static input."""
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    path = tmp_path / "static.onnx"
    torch.onnx.export(model, (torch.rand(1, 1, 8, 8),), str(path), dynamo=False, input_names=["lr"])
    with pytest.raises(UserError, match="not symbolic"):
        check_symbolic(path)


def test_bad_precision_and_suffix(tmp_path):
    model, cfg = tiny_model("l1")
    with pytest.raises(UserError, match="--precision"):
        export_onnx(model, tmp_path / "m.onnx", cfg, precision="int8")
    with pytest.raises(UserError, match=".onnx"):
        export_onnx(model, tmp_path / "m.bin", cfg)


def test_corrupt_onnx_is_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        ort_session(bad)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from fgdsr.checkpoint import save_model_checkpoint

    model, cfg = tiny_model("fd")
    return save_model_checkpoint(tmp_path_factory.mktemp("ckpt") / "fd", model, cfg)


@pytest.mark.slow
def test_cli_export_checkpoint(tmp_path, checkpoint):
    out = tmp_path / "fd.onnx"
    res = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "ORT parity" in res.output
    side = json.loads(sidecar_path(out).read_text())
    assert side["source_sha256"] == sha256_path(checkpoint) and side["variant"] == "fd"
    assert side["fgdsr_version"] and side["opset"] >= 17


def test_cli_export_errors_are_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["export", str(tmp_path / "missing" / "dir"), "--out", str(tmp_path / "x.onnx")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "error:" in res.output
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    res = runner.invoke(app, ["export", str(onnx_file), "--out", str(tmp_path / "y.onnx")])
    assert res.exit_code == 2 and "takes a checkpoint" in res.output and res.output.count("\n") == 1


@pytest.mark.slow
def test_export_from_mlflow_run_id(tmp_path, checkpoint, monkeypatch):
    """A run id whose artifacts hold a checkpoint exports; an unknown run id is one line, exit 2."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # an experiment of this store: earlier tests in the process may have left another store's experiment active
    exp = mlflow.set_experiment("export-test")
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        mlflow.log_artifacts(str(checkpoint), artifact_path="checkpoints/best")
    mlflow.set_tracking_uri(None)
    runner = CliRunner()
    out = tmp_path / "run.onnx"
    res = runner.invoke(app, ["export", run.info.run_id, "--out", str(out), "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    assert read_sidecar(out, "onnx")["source"] == run.info.run_id
    res = runner.invoke(app, ["export", "0" * 32, "--out", str(out), "--tracking-uri", uri])
    assert res.exit_code == 2 and "not found" in res.output and res.output.count("\n") == 1
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = runner.invoke(app, ["export", "0" * 32, "--out", str(out)])  # no store named: no default store made
    assert res.exit_code == 2 and "needs --tracking-uri" in res.output and res.output.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ------------------------------------------------------------------ issue 15: an opset it cannot produce


@pytest.mark.parametrize("opset", ["3", "17", "999"])
def test_cli_export_refuses_an_opset_it_cannot_write(tmp_path, checkpoint, opset):
    """Below 18 the exporter silently keeps opset 18 (measured), above onnx's newest it cannot write: one line
    naming the supported range, exit 2, nothing written."""
    from trt.export import OPSET_MIN, max_opset

    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(out), "--opset", opset])
    assert res.exit_code == 2, res.output
    (line,) = res.output.splitlines()
    assert line.startswith("error: --opset") and f"{OPSET_MIN}..{max_opset()}" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_export_writes_the_requested_opset_and_says_so(tmp_path, checkpoint):
    out = tmp_path / "m18.onnx"
    res = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(out), "--opset", "18"])
    assert res.exit_code == 0, res.output
    assert "opset 18" in res.output
    model = onnx.load(str(out))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert read_sidecar(out, "onnx")["opset"] == 18


def test_static_shape_export(tmp_path):
    """A graph of one input shape (what the tile runners and a min = opt = max engine use): every dim fixed."""
    from trt.export import ExportOptions

    model, cfg = tiny_model("l1")
    out = tmp_path / "static.onnx"
    meta = export_onnx(model, out, cfg, ExportOptions(static_shape=(1, 1, 24, 40)))
    assert meta["input_dims"] == [1, 1, 24, 40] and meta["static"] is True and meta["io"] == "y"
    (check,) = meta["parity"]["checks"]
    assert check["lr_hw"] == [24, 40] and check["max_abs_err"] < FP32_TOL
    sess = ort_session(out)
    assert sess.get_outputs()[0].shape == [1, 1, 96, 160]
