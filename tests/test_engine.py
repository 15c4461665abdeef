"""Shapes/profiles, sidecars, engine checks and one-line errors (CPU); a real TensorRT build where available."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fgdsr.errors import UserError
from orchestrator.cli import app
from trt.engine import check_compatible, read_engine_meta
from trt.shapes import Profile, Size, lr_size, make_profile, parse_size
from trt.sidecar import read_sidecar, sha256_path, sidecar_path, write_sidecar

ENGINE_META = {
    "fgdsr_version": "0.1.0", "onnx_sha256": "0" * 64, "tensorrt_version": "10.9.0", "gpu_name": "RTX 2080 Ti",
    "compute_capability": "7.5", "profile": {"min": [1, 1, 8, 8], "opt": [1, 1, 180, 320], "max": [1, 1, 270, 480]},
    "precision": "fp32", "scale": 4, "variant": "fd", "input_names": ["lr"], "output_names": ["sr"],
}  # fmt: skip


# ------------------------------------------------------------------------------------------------ shapes
def test_parse_size():
    assert parse_size("1280x720") == Size(height=720, width=1280)
    assert parse_size(" LR:320X180 ") == Size(height=180, width=320, lr=True)
    for bad in ("1280", "axb", "0x5", "1x2x3", "-4x4"):
        with pytest.raises(UserError, match="WIDTHxHEIGHT|positive"):
            parse_size(bad, "--min")


def test_lr_size_matches_complexity_convention():
    """One derivation (trt.shapes.lr_size, also used by trt.complexity): the benchmarked LR shape is the counted one."""

    def lr(w, h, s):
        return lr_size(Size(height=h, width=w), s).hw

    assert lr(1280, 720, 4) == (180, 320)
    assert lr(1920, 1080, 4) == (270, 480)
    assert lr(1280, 720, 3) == (240, 427)
    assert lr(1280, 720, 8) == (90, 160)
    assert lr_size(Size(height=180, width=320, lr=True), 4) == Size(height=180, width=320, lr=True)
    with pytest.raises(UserError, match="smaller than one LR pixel"):
        lr_size(Size(height=2, width=2), 8)


def test_make_profile_defaults_and_order():
    p = make_profile(parse_size("64x64"), parse_size("1280x720"), parse_size("1920x1080"), 4)
    assert p == Profile((1, 1, 16, 16), (1, 1, 180, 320), (1, 1, 270, 480))
    assert (
        p.contains((1, 1, 180, 320)) and not p.contains((1, 1, 300, 320)) and not p.contains((2, 1, 20, 20))
    )
    assert Profile.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    q = make_profile(parse_size("lr:8x8"), parse_size("lr:320x180"), parse_size("1920x1080"), 4, (1, 4, 8))
    assert q.min == (1, 1, 8, 8) and q.opt == (4, 1, 180, 320) and q.max == (8, 1, 270, 480)
    with pytest.raises(UserError, match="not ordered"):
        make_profile(parse_size("1920x1080"), parse_size("1280x720"), parse_size("1920x1080"), 4)


# ------------------------------------------------------------------------------------------------ sidecars
def test_sidecar_roundtrip_and_corruption(tmp_path):
    art = tmp_path / "m.engine"
    art.write_bytes(b"engine bytes")
    path = write_sidecar(art, "engine", ENGINE_META)
    assert path == sidecar_path(art) == tmp_path / "m.engine.json"
    assert read_sidecar(art, "engine")["gpu_name"] == "RTX 2080 Ti"
    assert not list(tmp_path.glob("*.tmp-*"))  # atomic write leaves no temp file
    with pytest.raises(UserError, match="not an onnx sidecar"):
        read_sidecar(art, "onnx")
    path.write_text("{ not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_sidecar(art, "engine")
    path.write_text(json.dumps({k: v for k, v in {**ENGINE_META, "kind": "engine", "format": 1}.items()
                                if k != "gpu_name"}))  # fmt: skip
    with pytest.raises(UserError, match="lacks gpu_name"):
        read_sidecar(art, "engine")
    path.unlink()
    with pytest.raises(UserError, match="sidecar missing"):
        read_sidecar(art, "engine")


def test_sha256_of_file_and_dir(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"abc")
    assert (
        sha256_path(tmp_path / "d" / "a")
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    h1 = sha256_path(tmp_path / "d")
    (tmp_path / "d" / "b").write_bytes(b"")
    assert sha256_path(tmp_path / "d") != h1


# ------------------------------------------------------------------------------------------------ engines
def test_corrupt_engine_is_refused_without_tensorrt(tmp_path):
    """The sidecar stores the engine's sha256: a truncated/replaced engine is caught before TensorRT loads."""
    art = tmp_path / "m.engine"
    art.write_bytes(b"engine bytes")
    import hashlib

    write_sidecar(
        art, "engine", {**ENGINE_META, "engine_sha256": hashlib.sha256(b"engine bytes").hexdigest()}
    )
    assert read_engine_meta(art)["variant"] == "fd"
    art.write_bytes(b"engine by")
    with pytest.raises(UserError, match="do not match its sidecar"):
        read_engine_meta(art)


def test_engine_from_another_tensorrt_or_gpu_is_refused():
    gpu = {"gpu_name": "RTX 2080 Ti", "compute_capability": "7.5"}
    check_compatible(ENGINE_META, "10.9.0", gpu, "m.engine")  # same: fine
    with pytest.raises(UserError, match="built with TensorRT 10.9.0, this is 11.0.0; rebuild"):
        check_compatible(ENGINE_META, "11.0.0", gpu, "m.engine")
    with pytest.raises(UserError, match="built for RTX 2080 Ti .* this GPU is NVIDIA H200"):
        check_compatible(ENGINE_META, "10.9.0", {"gpu_name": "NVIDIA H200", "compute_capability": "9.0"}, "m")


HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed: the missing-TensorRT message cannot be shown")
def test_cli_without_tensorrt_is_one_line(tmp_path):
    art = tmp_path / "m.engine"
    art.write_bytes(b"x")
    import hashlib

    write_sidecar(art, "engine", {**ENGINE_META, "engine_sha256": hashlib.sha256(b"x").hexdigest()})
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    write_sidecar(onnx_file, "onnx", {"fgdsr_version": "0.1.0", "source_sha256": "", "scale": 4, "variant": "l1",
                                      "opset": 20, "input_names": ["lr"], "output_names": ["sr"],
                                      "precision": "fp32"})  # fmt: skip
    runner = CliRunner()
    res = runner.invoke(app, ["build-engine", str(onnx_file), "--out", str(tmp_path / "o.engine")])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "pip install 'fgdsr[trt]'" in res.output
    res = runner.invoke(app, ["benchmark", "--baseline", str(art), "--candidate", str(art), "--backend",
                              "tensorrt", "--dataset", "none"])  # fmt: skip
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "pip install 'fgdsr[trt]'" in res.output


def test_cli_build_engine_bad_input_is_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["build-engine", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "sidecar missing" in res.output and res.output.count("\n") == 1
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    sidecar_path(onnx_file).write_text("[]")
    res = runner.invoke(app, ["build-engine", str(onnx_file), "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "not an onnx sidecar" in res.output and res.output.count("\n") == 1
    res = runner.invoke(app, ["benchmark", "--baseline", str(onnx_file), "--candidate", str(onnx_file),
                              "--backend", "torch", "--dataset", "none"])  # fmt: skip
    assert res.exit_code == 2 and "needs a checkpoint" in res.output and res.output.count("\n") == 1


def _gpu_and_trt() -> str | None:
    if not HAS_TRT or importlib.util.find_spec("pycuda") is None:
        return "tensorrt/pycuda not installed (pip install 'fgdsr[trt]')"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() < 1:
            return "no CUDA GPU"
    except Exception as e:  # noqa: BLE001
        return f"no usable CUDA GPU ({e})"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_gpu_and_trt() is not None, reason=str(_gpu_and_trt()))
def test_tensorrt_engine_matches_onnxruntime(tmp_path):  # pragma: no cover - needs a GPU
    import torch

    from fgdsr.config import load_config
    from fgdsr.models import build_model
    from trt.engine import build_engine
    from trt.export import export_onnx, ort_session
    from trt.runtime import TrtRunner

    cfg = load_config(None, {"loss": "fd", "depth": 2, "channels": 8})
    torch.manual_seed(0)
    onnx_path = tmp_path / "fd.onnx"
    export_onnx(build_model(cfg).eval(), onnx_path, cfg)
    prof = make_profile(parse_size("lr:8x8"), parse_size("lr:32x24"), parse_size("lr:64x64"), 4)
    meta = build_engine(
        onnx_path, tmp_path / "fd.engine", prof, workspace_gb=1, timing_cache=tmp_path / "t.cache"
    )
    assert (tmp_path / "t.cache").stat().st_size > 0 and meta["precision"] == "fp32"
    runner = TrtRunner(tmp_path / "fd.engine", (1, 1, 24, 32))
    x = np.random.default_rng(0).random((1, 1, 24, 32), dtype=np.float32)
    ref = ort_session(onnx_path).run(["sr"], {"lr": x})[0]
    assert np.abs(runner.run(x) - ref).max() < 1e-3
    assert runner.time_compute() > 0 and runner.time_end_to_end() > 0
    with pytest.raises(UserError, match="outside its profile"):
        runner.run(np.zeros((1, 1, 100, 100), np.float32))
