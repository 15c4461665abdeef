"""`fgdsr export --rgb`: the bicubic taps in the graph are MATLAB's, the graph equals `fgdsr upscale` on the
built-in photos within one grey level, and the five-line onnxruntime snippet of docs/DEPLOY.md runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from deploy_util import tiny_checkpoint
from PIL import Image
from typer.testing import CliRunner

from fgdsr.data.builtin import builtin_paths
from fgdsr.data.imresize import imresize
from orchestrator.cli import app
from trt.rgb_graph import BicubicUp, bicubic_taps

DOCS = Path(__file__).resolve().parents[1] / "docs" / "DEPLOY.md"


def test_x2_taps_by_hand():
    """MATLAB x2: output 2i samples input position i - 1/4, 2i+1 samples i + 1/4 (Keys a = -0.5 kernel):
    cubic(1.75), cubic(0.75), cubic(0.25), cubic(1.25) = -0.0234375, 0.2265625, 0.8671875, -0.0703125."""
    lo, hi, w = bicubic_taps(2)
    assert (lo, hi) == (-2, 2)
    np.testing.assert_allclose(w[0], [-0.0234375, 0.2265625, 0.8671875, -0.0703125, 0.0], atol=1e-15)
    np.testing.assert_allclose(w[1], [0.0, -0.0703125, 0.8671875, 0.2265625, -0.0234375], atol=1e-15)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_graph_bicubic_equals_imresize(scale):
    """The polyphase filter with symmetric padding is MATLAB's imresize, borders included (float64)."""
    up = BicubicUp(scale, 2, torch.float64)
    gen = torch.Generator().manual_seed(scale)
    for h, w in ((3, 5), (8, 9), (17, 23)):
        x = torch.rand(2, 2, h, w, generator=gen, dtype=torch.float64)
        got, ref = up(x), imresize(x, scale=scale)
        assert got.shape == ref.shape == (2, 2, h * scale, w * scale)
        assert (got - ref).abs().max() < 1e-12


def _tiny(loss: str, folder: Path) -> Path:
    return tiny_checkpoint(folder, loss)


def _graph_upscale(onnx_path: Path, photo: Path) -> np.ndarray:
    from trt.export import ort_session

    x = np.asarray(Image.open(photo).convert("RGB"), np.float32).transpose(2, 0, 1)[None] / 255
    y = ort_session(onnx_path).run(None, {"lr": x})[0][0]
    return np.floor(y.transpose(1, 2, 0) * 255 + 0.5).astype(np.int64)


@pytest.fixture(scope="module")
def l1_rgb(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rgb")
    c = _tiny("l1", folder / "l1")
    out = folder / "model_rgb.onnx"
    r = CliRunner().invoke(app, ["export", str(c), "--out", str(out), "--rgb"])
    assert r.exit_code == 0, r.output
    assert "RGB in/out" in r.output
    return c, out


def _crops(folder: Path) -> list[Path]:
    """A 160 x 120 crop from the middle of each of the 5 built-in photos (x4: 640 x 480; keeps the test short)."""
    out = []
    for photo in builtin_paths("builtin-eval"):
        img = Image.open(photo).convert("RGB")
        w, h = img.size
        left, top = (w - 160) // 2, (h - 120) // 2
        img.crop((left, top, left + 160, top + 120)).save(folder / f"{photo.stem}.png")
        out.append(folder / f"{photo.stem}.png")
    return out


@pytest.mark.slow
def test_rgb_graph_equals_fgdsr_upscale_on_the_builtin_photos(l1_rgb, tmp_path):
    c, onnx_path = l1_rgb
    side = json.loads(Path(str(onnx_path) + ".json").read_text())
    assert side["io"] == "rgb" and side["input_dims"] == ["batch", 3, "height", "width"]
    assert all(ch["max_abs_err"] < 1e-4 for ch in side["parity"]["checks"])
    photos = _crops(tmp_path)
    assert len(photos) == 5
    args = ["upscale", *map(str, photos), "--checkpoint", str(c), "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(app, [*args, "--tile", "64", "--overlap", "16"])
    assert r.exit_code == 0, r.output  # 3 x 2 tiles each; the graph runs each photo whole
    tmp_path = tmp_path / "o"
    for photo in photos:
        ref = np.asarray(Image.open(tmp_path / f"{photo.stem}_x4.png").convert("RGB")).astype(np.int64)
        got = _graph_upscale(onnx_path, photo)
        diff = np.abs(got - ref)
        assert got.shape == ref.shape and diff.max() <= 1, (photo.name, diff.max())
        assert (diff > 0).mean() < 1e-3, photo.name  # float32 in the graph vs float64: rounding at .5 only


@pytest.mark.slow
def test_rgb_graph_fd_equals_fgdsr_upscale(tmp_path):
    """FD: the Class-Module and the argmax in the RGB graph; compared untiled (--tile 0) on one photo."""
    c = _tiny("fd", tmp_path / "fd")
    out = tmp_path / "fd_rgb.onnx"
    r = CliRunner().invoke(app, ["export", str(c), "--out", str(out), "--rgb"])
    assert r.exit_code == 0, r.output
    photo = _crops(tmp_path)[3]  # from chelsea
    r = CliRunner().invoke(
        app, ["upscale", str(photo), "--checkpoint", str(c), "--out", str(tmp_path), "--tile", "0"]
    )
    assert r.exit_code == 0, r.output
    ref = np.asarray(Image.open(tmp_path / f"{photo.stem}_x4.png").convert("RGB")).astype(np.int64)
    assert np.abs(_graph_upscale(out, photo) - ref).max() <= 1


def _snippet() -> str:
    """The five-line plain-onnxruntime snippet of docs/DEPLOY.md (the python block after its heading)."""
    text = DOCS.read_text()
    part = text[text.index("### Plain onnxruntime in five lines") :]
    code = re.search(r"```python\n(.*?)```", part, re.S).group(1)
    assert len(code.strip().splitlines()) == 5, code
    return code


@pytest.mark.slow
def test_docs_snippet_runs_and_matches(l1_rgb, tmp_path):
    import shutil

    c, onnx_path = l1_rgb
    photo = builtin_paths("builtin-eval")[3]
    Image.open(photo).convert("RGB").crop((0, 0, 120, 90)).save(tmp_path / "photo.png")
    shutil.copy(onnx_path, tmp_path / "model_rgb.onnx")
    proc = subprocess.run(
        [sys.executable, "-c", _snippet()], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    got = np.asarray(Image.open(tmp_path / "photo_x4.png")).astype(np.int64)
    r = CliRunner().invoke(
        app, ["upscale", str(tmp_path / "photo.png"), "--checkpoint", str(c), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 0, r.output
    ref = np.asarray(Image.open(tmp_path / "o" / "photo_x4.png")).astype(np.int64)
    assert got.shape == ref.shape == (360, 480, 3) and np.abs(got - ref).max() <= 1


def test_benchmark_refuses_an_rgb_export_in_one_line(l1_rgb, tmp_path):
    """The benchmark feeds a Y plane: an --rgb graph is refused by name, exit 2, no traceback."""
    c, rgb = l1_rgb
    r = CliRunner().invoke(app, ["benchmark", "--baseline", str(c), "--candidate", str(rgb), "--backend",
                                 "onnxruntime", "--out", str(tmp_path / "b")])  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "--rgb" in r.output and str(rgb.name) in r.output and "Traceback" not in r.output


def test_readme_snippet_is_the_tested_one():
    """README.md's five lines are DEPLOY.md's, which test_docs_snippet_runs_and_matches runs."""
    readme = (DOCS.parents[1] / "README.md").read_text()
    part = readme[readme.index("### Plain onnxruntime in five lines") :]
    assert re.search(r"```python\n(.*?)```", part, re.S).group(1) == _snippet()
