"""`evaluate` and `fgdsr evaluate`: the JSON schema, baselines, --out files, ModelUpscaler, one-line errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fgdsr.data.imresize import imresize
from fgdsr.errors import UserError
from fgdsr.evaluate import attach_baseline, check_scale, evaluate
from fgdsr.inference import BicubicUpscaler, ModelUpscaler
from orchestrator.cli import app


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """Three small images (one single-channel) in <root>/Tiny/HR."""
    root = tmp_path_factory.mktemp("root")
    hr = root / "Tiny" / "HR"
    hr.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 256, size=(9, 10, 3)), np.ones((6, 6, 1))).astype(np.uint8)  # blocky
    Image.fromarray(base).save(hr / "a.png")
    Image.fromarray(base[:50, :45]).save(hr / "b.png")
    Image.fromarray(base[..., 0]).save(hr / "c.png")  # mode L
    return root


def _check_schema(report):
    assert set(report) == {"results"}
    for r in report["results"]:
        assert {"dataset", "scale", "method", "psnr", "ssim", "images"} <= set(r)
        assert isinstance(r["scale"], int) and isinstance(r["psnr"], float)
        for e in r["images"]:
            assert {"name", "psnr", "ssim", "entropy", "size"} <= set(e)
            assert 0 <= e["entropy"] <= 8 and -1 <= e["ssim"] <= 1
        assert r["psnr"] == pytest.approx(np.mean([e["psnr"] for e in r["images"]]))


def test_schema_and_modcrop_sizes(small_set):
    rep = evaluate({"bicubic": BicubicUpscaler}, ["Tiny"], [2, 3], small_set)
    _check_schema(rep)
    assert [(r["dataset"], r["scale"], r["method"]) for r in rep["results"]] == [
        ("Tiny", 2, "bicubic"),
        ("Tiny", 3, "bicubic"),
    ]
    sizes = {e["name"]: e["size"] for e in rep["results"][1]["images"]}
    assert sizes == {"a": [54, 60], "b": [48, 45], "c": [54, 60]}
    json.dumps(rep, allow_nan=False)


def test_upscaler_instances_and_baseline_delta(small_set):
    class Shift:
        """Bicubic, then +1 grey level: a worse method with a known per-image delta sign."""

        scale = 2

        def __call__(self, lr):
            sr = BicubicUpscaler(2)(lr).astype(int) + 3
            return np.clip(sr, 0, 255).astype(np.uint8)

    rep = evaluate(
        {"bicubic": BicubicUpscaler, "shift": Shift()}, ["Tiny"], [2], small_set, baseline="bicubic"
    )
    base, shift = rep["results"]
    assert "delta_psnr" not in base and shift["delta_psnr"] < 0
    for b, s in zip(base["images"], shift["images"], strict=True):
        assert s["delta_psnr"] == pytest.approx(s["psnr"] - b["psnr"])
    with pytest.raises(UserError, match="x2 upscaler"):
        evaluate({"shift": Shift()}, ["Tiny"], [4], small_set)
    # a saved report as the baseline gives the same deltas
    again = attach_baseline({"results": [json.loads(json.dumps(shift))]}, {"results": [base]})
    assert again["results"][0]["delta_psnr"] == pytest.approx(shift["delta_psnr"])


def test_lr_is_cached_and_variant(small_set):
    from fgdsr.data.datasets import resolve_dataset
    from fgdsr.evaluate import lr_image

    ds = resolve_dataset("Tiny", small_set)
    assert lr_image(ds, 0, 2)[1] is lr_image(ds, 0, 2)[1]
    assert lr_image(ds, 0, 2, lr_uint8=True)[1].dtype == np.uint8


def test_model_upscaler_with_a_bicubic_network_matches_bicubic(small_set):
    class BicubicNet(torch.nn.Module):
        def forward(self, x):
            return imresize(x, scale=2)

    rep = evaluate(
        {"b": BicubicUpscaler, "net": lambda s: ModelUpscaler(BicubicNet().double(), s)},
        ["Tiny"],
        [2],
        small_set,
    )
    a, b = rep["results"]
    for x, y in zip(a["images"], b["images"], strict=True):
        assert abs(x["psnr"] - y["psnr"]) < 0.05  # YCbCr round trip vs RGB bicubic: rounding only
    # grayscale input -> equal channels out
    g = np.repeat(np.random.default_rng(1).integers(0, 256, (8, 9, 1), dtype=np.uint8), 3, axis=2)
    out = ModelUpscaler(BicubicNet(), 2)(g)
    assert out.shape == (16, 18, 3) and out.dtype == np.uint8
    assert np.abs(out[..., 0].astype(int) - out[..., 2]).max() <= 1


def test_check_scale():
    assert check_scale("4") == 4 and check_scale(3.0) == 3
    for bad in ("1", "1.5", "x4", "0", "-2"):
        with pytest.raises(UserError):
            check_scale(bad)


def _run(args, env=None):
    return CliRunner().invoke(app, ["evaluate", *args], env=env)


def test_cli_json_is_one_object_on_stdout(small_set):
    r = _run(["--dataset", "Tiny", "--scale", "2", "--data-root", str(small_set), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    _check_schema(rep)
    assert rep["results"][0]["method"] == "bicubic"


def test_cli_table_and_out_files(small_set, tmp_path):
    out = tmp_path / "out"
    r = _run(
        ["-d", "Tiny", "-s", "2", "--data-root", str(small_set), "--out", str(out), "--baseline", "bicubic"]
    )
    assert r.exit_code == 0, r.output
    assert "mean" in r.stdout and "Tiny" in r.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["Tiny_x2_bicubic.csv", "Tiny_x2_entropy_psnr.png", "results.json"]
    lines = (out / "Tiny_x2_bicubic.csv").read_text().splitlines()
    assert lines[0] == "name,height,width,entropy,psnr,ssim" and len(lines) == 4
    # a saved report as --baseline: the delta column and the entropy-vs-delta plot appear
    r = _run(
        [
            "-d",
            "Tiny",
            "-s",
            "2",
            "--data-root",
            str(small_set),
            "--out",
            str(out),
            "--baseline",
            str(out / "results.json"),
        ]
    )
    assert r.exit_code == 0, r.output
    assert "ΔPSNR" in r.stdout and (out / "Tiny_x2_entropy_dpsnr.png").stat().st_size > 1000
    assert (out / "Tiny_x2_bicubic.csv").read_text().splitlines()[0].endswith(",delta_psnr")


@pytest.mark.parametrize(
    "args,match",
    [
        (["--scale", "1.5"], "integer"),
        (["--scale", "1"], "integer"),
        (["--scale", "four"], "not a number"),
        (["--dataset", "NoSuchSet"], "unknown"),
        (["--dataset", "Empty"], "no images"),
        (["--dataset", "Broken"], "broken.png"),
        (["--method", "lanczos"], "lanczos"),
        (["--max-images", "0"], "max-images"),
        (["--baseline", "missing.json"], "missing.json"),
        (["--checkpoint", "no/such/dir"], "no/such/dir"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, match):
    (tmp_path / "Empty" / "HR").mkdir(parents=True)
    (tmp_path / "Broken" / "HR").mkdir(parents=True)
    (tmp_path / "Broken" / "HR" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    full = args if "--dataset" in args else [*args, "--dataset", "Empty"]  # a valid-looking but empty set
    r = _run([*full, "--data-root", str(tmp_path)])
    assert r.exit_code == 2, r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and match in err[0], r.stderr
    assert "Traceback" not in r.output and r.stdout == ""


def test_set5_bicubic_via_cli(data_root):
    r = _run(["-d", "Set5", "-s", "4", "--data-root", str(data_root), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)["results"][0]
    assert abs(res["psnr"] - 28.42) <= 0.02 and abs(res["ssim"] - 0.8104) <= 0.001
    assert [e["name"] for e in res["images"]] == ["baby", "bird", "butterfly", "head", "woman"]


@pytest.mark.slow
def test_cli_checkpoint_end_to_end(small_set, tmp_path):
    """A real (untrained, tiny) LapSRN checkpoint through `--checkpoint`, with bicubic as the baseline."""
    checkpoint = pytest.importorskip("fgdsr.checkpoint")
    models = pytest.importorskip("fgdsr.models")
    from fgdsr.config import TrainConfig

    cfg = TrainConfig(scale=2, depth=1, channels=8)
    torch.manual_seed(0)
    ckpt = checkpoint.save_model_checkpoint(tmp_path / "tiny-l1", models.build_model(cfg), cfg)
    common = ["-d", "Tiny", "--data-root", str(small_set), "--checkpoint", str(ckpt)]
    r = _run([*common, "--baseline", "bicubic", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    _check_schema(rep)
    by_method = {x["method"]: x for x in rep["results"]}
    assert set(by_method) == {"tiny-l1", "bicubic"}
    assert by_method["tiny-l1"]["scale"] == 2  # no --scale: the model's scale
    assert "delta_psnr" in by_method["tiny-l1"] and "delta_psnr" not in by_method["bicubic"]
    r = _run([*common, "--scale", "4"])
    assert r.exit_code == 2 and "x2 model" in r.stderr


# ------------------------------------------------------------------- deployed models: --onnx / --engine


def _tiny_checkpoint(folder):
    from deploy_util import tiny_checkpoint

    return tiny_checkpoint(folder, "fd")


@pytest.mark.slow
def test_evaluate_onnx_equals_checkpoint_per_image(small_set, tmp_path):
    """A deployed model's accuracy: `--onnx` (ONNX Runtime) gives the `--checkpoint` (torch) PSNR per image
    within 0.01 dB, in the same table/JSON schema, method = the file's name; the RGB graph too."""
    ckpt = _tiny_checkpoint(tmp_path / "fd-tiny")
    for extra, name in (([], "fd.onnx"), (["--rgb"], "fd_rgb.onnx")):
        r = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(tmp_path / name), *extra])
        assert r.exit_code == 0, r.output
    common = [
        "-d",
        "Tiny",
        "-d",
        "builtin-eval",
        "--max-images",
        "2",
        "--data-root",
        str(small_set),
        "--json",
    ]
    r = _run(["--checkpoint", str(ckpt), "--onnx", str(tmp_path / "fd.onnx"), "--onnx",
              str(tmp_path / "fd_rgb.onnx"), *common])  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    _check_schema(rep)
    by = {(x["dataset"], x["method"]): x for x in rep["results"]}
    assert {m for _, m in by} == {"fd-tiny", "fd.onnx", "fd_rgb.onnx"}
    for dataset in ("Tiny", "builtin-eval"):
        ref = by[(dataset, "fd-tiny")]
        for method in ("fd.onnx", "fd_rgb.onnx"):
            got = by[(dataset, method)]
            assert got["scale"] == 4 and [e["name"] for e in got["images"]] == [
                e["name"] for e in ref["images"]
            ]
            for a, b in zip(got["images"], ref["images"], strict=True):
                assert abs(a["psnr"] - b["psnr"]) <= 0.01, (dataset, method, a["name"], a["psnr"], b["psnr"])
                assert abs(a["ssim"] - b["ssim"]) <= 1e-4
    # the table form names the file too
    r = _run(["--onnx", str(tmp_path / "fd.onnx"), *common[:-1]])
    assert r.exit_code == 0 and "fd.onnx" in r.stdout


def test_evaluate_deployed_bad_input_is_one_line(tmp_path):
    from trt.sidecar import sha256_path, write_sidecar

    (tmp_path / "m.onnx").write_bytes(b"not onnx")
    (tmp_path / "m.engine").write_bytes(b"not an engine")
    write_sidecar(tmp_path / "m.engine", "engine", {
        "fgdsr_version": "0", "onnx_sha256": "", "engine_sha256": sha256_path(tmp_path / "m.engine"),
        "tensorrt_version": "10.0", "gpu_name": "x", "compute_capability": "8.6",
        "profile": {"min": [1, 1, 8, 8], "opt": [1, 1, 8, 8], "max": [1, 1, 8, 8]}, "precision": "fp32",
        "scale": 4, "variant": "l1", "input_names": ["lr"], "output_names": ["sr"]})  # fmt: skip
    for args, match in (
        (["--onnx", str(tmp_path / "missing.onnx")], "missing.onnx"),
        (["--onnx", str(tmp_path / "m.engine")], "ending in .onnx"),
        (["--onnx", str(tmp_path / "m.onnx")], "sidecar missing"),
        (["--engine", str(tmp_path / "m.onnx")], "ending in .engine"),
        # no TensorRT/pycuda here: one line naming the extra (with them: this engine's GPU does not match)
        (["--engine", str(tmp_path / "m.engine")], "not installed" if _no_trt() else "m.engine"),
    ):
        r = _run([*args, "-d", "builtin-eval", "--max-images", "1"])
        assert r.exit_code == 2, r.output
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and match in err[0], r.stderr
        assert "Traceback" not in r.output


def _no_trt() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("pycuda") is None


@pytest.mark.skipif(_no_trt(), reason="tensorrt and pycuda are not installed (no GPU here)")
def test_evaluate_engine_equals_checkpoint(small_set, tmp_path):
    """On a GPU machine with TensorRT: an fp32 engine's PSNR per image within 0.01 dB of the checkpoint's."""
    ckpt = _tiny_checkpoint(tmp_path / "fd-tiny")
    onnx_path, engine = tmp_path / "fd.onnx", tmp_path / "fd.engine"
    assert CliRunner().invoke(app, ["export", str(ckpt), "--out", str(onnx_path)]).exit_code == 0
    r = CliRunner().invoke(app, ["build-engine", str(onnx_path), "--out", str(engine), "--min", "lr:8x8",
                                 "--opt", "lr:64x64", "--max", "lr:256x256"])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = _run(["--checkpoint", str(ckpt), "--engine", str(engine), "-d", "Tiny", "--data-root", str(small_set),
              "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    ref, got = json.loads(r.stdout)["results"]
    assert got["method"] == "fd.engine"
    for a, b in zip(got["images"], ref["images"], strict=True):
        assert abs(a["psnr"] - b["psnr"]) <= 0.01


# --------------------------------------------------------------------- issue 15: --out is an existing file


def test_out_is_an_existing_file_one_line_nothing_written(small_set, tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    r = _run(["-d", "Tiny", "-s", "2", "--data-root", str(small_set), "--out", str(target)])
    assert r.exit_code == 2, r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out") and "results.txt" in err[0], r.stderr
    assert "Traceback" not in r.output and r.stdout == ""
    assert target.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]
