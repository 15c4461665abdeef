"""`fgdsr upscale`: static-shape windows, tiled == untiled, colour/alpha/16-bit, ONNX Runtime == torch, the tile
cache, the fp16 guard, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from deploy_util import tiny_model
from PIL import Image
from typer.testing import CliRunner

from fgdsr import checkpoint as ck
from fgdsr.errors import UserError
from fgdsr.upscale import (
    TileGuard,
    TilePlan,
    TorchTileRunner,
    UpscaleJob,
    axis_windows,
    model_fn,
    tile_problem,
    upscale_array,
    upscale_file,
    upscale_images,
)
from orchestrator.cli import app


def _model(loss: str = "l1", depth: int = 2, seed: int = 0):
    return tiny_model(loss, depth=depth, seed=seed, class_patch=8)


def _runner(model, cfg, scale: int = 4) -> TorchTileRunner:
    return TorchTileRunner(model_fn(model, cfg, scale))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model, cfg = _model()
    return ck.save_model_checkpoint(tmp_path_factory.mktemp("ck") / "c", model, cfg, {"step": 0})


@pytest.fixture(scope="module")
def fd_ckpt(tmp_path_factory):
    model, cfg = _model("fd")
    return ck.save_model_checkpoint(tmp_path_factory.mktemp("ckfd") / "fd", model, cfg, {"step": 0})


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image with edges (uint8 (h, w, 3))."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None] * np.array([1.0, 0.6, -0.8])
    base += (xx > w // 2)[..., None] * 40
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- the tile plan


def test_axis_windows_by_hand():
    # n=100, tile 32, overlap 8: windows of 48; the last two cores share the window shifted inward to 52..100
    assert axis_windows(100, TilePlan(32, 8)) == (48, [(0, 0, 32), (24, 32, 64), (52, 64, 100)])
    assert axis_windows(40, TilePlan(32, 8)) == (40, [(0, 0, 40)])  # shorter than a window: its own length
    assert axis_windows(100, TilePlan(None)) == (100, [(0, 0, 100)])
    # FD align 8: tile 30 -> 32, overlap 5 -> 8; 100 is padded to 104 for an aligned last window
    assert axis_windows(100, TilePlan(30, 5, 8)) == (48, [(0, 0, 32), (24, 32, 64), (56, 64, 100)])


@pytest.mark.parametrize("seed", range(4))
def test_axis_windows_properties(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        align = int(rng.choice([1, 4, 8]))
        plan = TilePlan(int(rng.integers(1, 40)), int(rng.integers(0, 20)), align)
        n = int(rng.integers(1, 300))
        size, wins = axis_windows(n, plan)
        p = plan.rounded()
        covered = [c for _, c0, c1 in wins for c in range(c0, c1)]
        assert covered == list(range(n))  # the cores tile the axis exactly once
        for start, c0, c1 in wins:
            assert start % align == 0 and start + size <= -(-n // align) * align
            assert start + size <= n or align > 1  # only FD windows reach (< align) past the image
            assert c0 - start >= p.overlap or start == 0  # context on both sides, or the border
            assert start + size - c1 >= p.overlap or start + size >= n


# ------------------------------------------------------------------------------------- tiled == untiled


@pytest.mark.parametrize("loss,hw", [("l1", (45, 70)), ("l1", (100, 37)), ("fd", (56, 80))])
def test_tiled_equals_untiled_with_enough_overlap(loss, hw):
    model, cfg = _model(loss)
    runner = _runner(model, cfg)
    img = _photo(*hw)
    align = cfg.class_patch if loss == "fd" else 1
    full, _ = upscale_array(runner, img, 4, plan=TilePlan(None, align=align))
    tiled, _ = upscale_array(runner, img, 4, plan=TilePlan(16, 16, align))
    assert full.shape == (hw[0] * 4, hw[1] * 4, 3) and full.dtype == np.uint8
    diff = np.abs(full.astype(int) - tiled.astype(int))
    assert diff.max() <= 1  # float rounding at .5 only
    assert (diff > 0).mean() < 1e-3


def test_fd_padding_is_confined_to_the_bottom_right_border():
    """FD, a side longer than the window and not a multiple of the Class-Module patch: the replicate pad (< 8 LR
    pixels) changes only the last LR pixels before that border, never the rest of the image."""
    model, cfg = _model("fd")
    runner = _runner(model, cfg)
    img = _photo(45, 70)  # 70 > 48 and 70 % 8 = 6: padded to 72 for the last window
    full, _ = upscale_array(runner, img, 4, plan=TilePlan(None, align=8))
    tiled, _ = upscale_array(runner, img, 4, plan=TilePlan(16, 16, 8))
    diff = np.abs(full.astype(int) - tiled.astype(int)).max(axis=(0, 2))
    band = 4 * 8  # HR columns within 8 LR pixels of the right border (the tiny model's receptive field: 5)
    assert diff[:-band].max() <= 1
    print(f"max diff in the last {band} HR columns: {diff[-band:].max()}")


def test_tiling_without_overlap_shows_border_effects():
    """The overlap matters: with none, tile seams differ (this is what the overlap removes)."""
    model, cfg = _model(depth=4)
    runner = _runner(model, cfg)
    img = _photo(40, 40)
    full, _ = upscale_array(runner, img, 4, plan=TilePlan(None))
    seams, _ = upscale_array(runner, img, 4, plan=TilePlan(16, 0))
    assert np.abs(full.astype(int) - seams.astype(int)).max() > 1


def test_colour_kept_cbcr_is_bicubic():
    from fgdsr.data.color import rgb2ycbcr
    from fgdsr.data.imresize import imresize

    model, cfg = _model()
    img = _photo(24, 20)
    sr, _ = upscale_array(_runner(model, cfg), img, 4, plan=TilePlan(8, 8))
    t = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
    cbcr_ref = imresize(rgb2ycbcr(t)[:, 1:], scale=4)
    cbcr_sr = rgb2ycbcr(torch.from_numpy(sr).permute(2, 0, 1)[None].double() / 255)[:, 1:]
    # uint8 rounding and clipping of RGB move chroma by a few levels at most
    assert (cbcr_sr - cbcr_ref).abs().mean() * 255 < 1.0


def test_untiled_equals_the_evaluation_upscaler():
    """`fgdsr upscale` and `fgdsr evaluate` (ModelUpscaler) give the same pixels for an 8-bit RGB image."""
    from fgdsr.inference import ModelUpscaler

    model, cfg = _model()
    img = _photo(30, 26, seed=3)
    ours, _ = upscale_array(_runner(model, cfg), img, 4, plan=TilePlan(None))
    ref = ModelUpscaler(model, 4)(img)
    assert np.array_equal(ours, ref)
    tiled, _ = upscale_array(_runner(model, cfg), img, 4, plan=TilePlan(8, 8))
    assert np.abs(tiled.astype(int) - ref.astype(int)).max() <= 1


# ------------------------------------------------------------------------------------------------ files


def _inputs(folder):
    """RGB (odd size), RGBA, gray, 16-bit gray and 16-bit colour TIFF inputs."""
    import tifffile

    img = _photo(21, 31)
    Image.fromarray(img).save(folder / "rgb.png")
    alpha = np.linspace(0, 255, 21 * 31).reshape(21, 31, 1).astype(np.uint8)
    Image.fromarray(np.concatenate([img, alpha], axis=2), "RGBA").save(folder / "alpha.png")
    Image.fromarray(img[..., 0]).save(folder / "gray.png")
    Image.fromarray(img[..., 0].astype(np.uint16) * 257).save(folder / "gray16.png")
    rgb16 = (img.astype(np.uint16) * 257 + np.random.default_rng(1).integers(0, 257, img.shape)).astype(
        np.uint16
    )
    tifffile.imwrite(folder / "rgb16.tif", rgb16, photometric="rgb")
    return [folder / n for n in ("rgb.png", "alpha.png", "gray.png", "gray16.png", "rgb16.tif")]


def test_files_rgb_alpha_gray_16bit(tmp_path, ckpt):
    import tifffile

    out = upscale_file(_inputs(tmp_path), ckpt, tmp_path / "out", tile=8)
    assert [p.name for p in out] == [
        "rgb_x4.png",
        "alpha_x4.png",
        "gray_x4.png",
        "gray16_x4.tif",
        "rgb16_x4.tif",
    ]
    with Image.open(out[0]) as im:
        assert im.mode == "RGB" and im.size == (124, 84)
    with Image.open(out[1]) as im:
        assert im.mode == "RGBA" and im.size == (124, 84)
        a = np.asarray(im)[..., 3].astype(int)
    assert a[:8].mean() < 30 and a[-8:].mean() > 225  # the alpha ramp (top to bottom) survives
    with Image.open(out[2]) as im:
        assert im.mode == "L" and im.size == (124, 84)
    g16 = tifffile.imread(out[3])
    assert g16.dtype == np.uint16 and g16.shape == (84, 124)
    # 16-bit precision is used: the result is not just multiples of 257
    assert (g16 % 257 != 0).mean() > 0.5
    c16 = tifffile.imread(out[4])
    assert c16.dtype == np.uint16 and c16.shape == (84, 124, 3)
    assert not list((tmp_path / "out").glob("*.tmp-*"))


def test_16bit_colour_png_is_refused(tmp_path, ckpt):
    # Pillow cannot write 48-bit PNG, so build one with the raw PNG writer in the standard library
    import struct
    import zlib

    h, w = 4, 5
    raw = b"".join(b"\x00" + bytes(range(w * 6)) for _ in range(h))

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    (tmp_path / "c16.png").write_bytes(png)
    with pytest.raises(UserError) as e:
        upscale_file([tmp_path / "c16.png"], ckpt, tmp_path / "out")
    assert "c16.png" in str(e.value) and "TIFF" in str(e.value)


def test_scale_options(tmp_path, ckpt):
    Image.fromarray(_photo(10, 12)).save(tmp_path / "a.png")
    (p,) = upscale_file([tmp_path / "a.png"], ckpt, tmp_path / "o", scale=2)
    with Image.open(p) as im:
        assert im.size == (24, 20)
    with pytest.raises(UserError, match="--scale 3"):
        upscale_file([tmp_path / "a.png"], ckpt, tmp_path / "o", scale=3)


def _one_line_error(r) -> str:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


def test_cli_upscale_and_one_line_errors(tmp_path, ckpt):
    Image.fromarray(_photo(10, 12)).save(tmp_path / "a.png")
    runner = CliRunner()
    r = runner.invoke(
        app, ["upscale", str(tmp_path / "a.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "a_x4.png").is_file()
    base = [str(tmp_path / "a.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]
    for args, match in (
        ([str(tmp_path / "missing.png"), *base[1:]], "missing.png"),
        ([base[0], "--checkpoint", str(tmp_path / "nockpt"), *base[3:]], "nockpt"),
        ([*base, "--scale", "8"], "--scale 8"),
        ([*base, "--backend", "onnxruntime", "--scale", "2"], "--backend torch"),
        ([*base, "--backend", "tflite"], "--backend"),
        ([*base, "--precision", "int8"], "--precision"),
        ([*base, "--precision", "fp16"], "CUDA"),  # torch fp16 needs a GPU
        ([*base, "--backend", "tensorrt"], "--device cuda"),
    ):
        assert match in _one_line_error(runner.invoke(app, ["upscale", *args]))


# ------------------------------------------------------------------------------ onnxruntime == torch


def _cli_upscale(images, ckpt, out, *extra):
    r = CliRunner().invoke(
        app, ["upscale", *map(str, images), "--checkpoint", str(ckpt), "--out", str(out), *map(str, extra)]
    )
    assert r.exit_code == 0, r.output
    return r


def _read(path):
    import tifffile

    return (tifffile.imread(path) if path.suffix == ".tif" else np.asarray(Image.open(path))).astype(np.int64)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["l1", "fd"])
def test_onnxruntime_equals_torch_odd_large_alpha_16bit(tmp_path, ckpt, fd_ckpt, which):
    """Every kind of input (odd sizes, a large image cut into many tiles, alpha, 16-bit): the onnxruntime backend
    writes what the torch backend writes, within one grey level (8-bit: 1, 16-bit: 257)."""
    checkpoint = ckpt if which == "l1" else fd_ckpt
    images = _inputs(tmp_path)
    Image.fromarray(_photo(101, 77, seed=5)).save(tmp_path / "large.png")  # 4 x 3 tiles of 32 (odd size)
    images.append(tmp_path / "large.png")
    common = ["--tile", "32", "--overlap", "16"]
    _cli_upscale(images, checkpoint, tmp_path / "torch", *common)
    r = _cli_upscale(images, checkpoint, tmp_path / "ort", "--backend", "onnxruntime", *common)
    # one graph per window shape: 64x64 (large) and the small images' own size (21x31), each exported once
    built = [ln.removeprefix("upscale: tile graph ") for ln in r.output.splitlines() if "tile graph" in ln]
    assert built == ["tile-1x1x21x31-fp32.onnx: built", "tile-1x1x64x64-fp32.onnx: built"]
    for src in images:
        a = sorted((tmp_path / "torch").glob(src.stem + "_x4.*"))[0]
        b = tmp_path / "ort" / a.name
        x, y = _read(a), _read(b)
        assert x.shape == y.shape
        tol = 257 if x.max() > 255 else 1
        diff = np.abs(x - y)
        assert diff.max() <= tol, (src.name, diff.max())
        assert (diff > 0).mean() < 0.01, src.name


# ------------------------------------------------------------------------------------------ the cache


def _stat(path):
    return path.stat().st_mtime_ns, path.read_bytes()


@pytest.mark.slow
def test_tile_cache_reused_and_invalidated(tmp_path):
    from trt.deploy_cache import TileKey, cache_dir_for, tile_onnx
    from trt.sidecar import sidecar_path

    model, cfg = _model()
    c = ck.save_model_checkpoint(tmp_path / "run" / "best", model, cfg, {"step": 0})
    key = TileKey(c, (1, 1, 24, 40))
    first = tile_onnx(key)
    assert (
        first.status == "built" and first.path.parent == cache_dir_for(c) == tmp_path / "run" / "best.deploy"
    )
    side = json.loads(sidecar_path(first.path).read_text())
    assert side["input_dims"] == [1, 1, 24, 40] and side["static"] and side["precision"] == "fp32"
    before = _stat(first.path)
    assert tile_onnx(key).status == "reused" and _stat(first.path) == before  # nothing rewritten
    # another shape or precision is another file; the first stays valid
    other = tile_onnx(TileKey(c, (1, 1, 24, 24)))
    assert other.status == "built" and other.path != first.path
    assert tile_onnx(key).status == "reused"
    # a version that differs from the running one: rebuilt
    side["torch_version"] = "1.0.0"
    sidecar_path(first.path).write_text(json.dumps(side))
    res = tile_onnx(key)
    assert res.status.startswith("rebuilt (torch_version")
    # the graph file changed behind the cache's back (truncated): rebuilt
    first.path.write_bytes(first.path.read_bytes()[:100])
    assert tile_onnx(key).status == "rebuilt (file changed since export)"
    # new weights in the same checkpoint folder: the checkpoint's sha256 differs, rebuilt
    model2, _ = _model(seed=1)
    ck.save_model_checkpoint(c, model2, cfg, {"step": 1})
    assert tile_onnx(key).status.startswith("rebuilt (source_sha256")
    assert tile_onnx(key).status == "reused"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best",
        "best.deploy",
    ]  # nothing inside best/


@pytest.mark.slow
def test_cli_cache_dir_and_second_run_reuses(tmp_path, ckpt):
    Image.fromarray(_photo(30, 40)).save(tmp_path / "a.png")
    args = [tmp_path / "a.png"]
    extra = ["--backend", "onnxruntime", "--tile", "16", "--overlap", "8", "--cache-dir", tmp_path / "cache"]
    r1 = _cli_upscale(args, ckpt, tmp_path / "o1", *extra)
    r2 = _cli_upscale(args, ckpt, tmp_path / "o2", *extra)
    assert "tile-1x1x30x32-fp32.onnx: built" in r1.output
    assert "tile-1x1x30x32-fp32.onnx: reused" in r2.output
    assert (tmp_path / "o1" / "a_x4.png").read_bytes() == (tmp_path / "o2" / "a_x4.png").read_bytes()


# ------------------------------------------------------------------------------------------ fp16 guard


class Overflowing(torch.nn.Module):
    """A Y "network" that overflows in fp16 where the input is bright: log(exp(12.5 y)) / 12.5 is y in fp32,
    but exp(12.5 y) > 65504 (the fp16 maximum) for y > 0.887, so fp16 gives inf there. Output: nearest x4."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        z = torch.log(torch.exp(y * 12.5)) / 12.5
        return torch.nn.functional.interpolate(z, scale_factor=4, mode="nearest")


def test_tile_problem_by_hand():
    ok = np.full((1, 1, 4, 4), 0.5, np.float32)
    assert tile_problem(ok, "fp16") is None
    bad = ok.copy()
    bad[0, 0, 1, 2] = np.inf
    bad[0, 0, 0, 0] = np.nan
    assert "2 of 16 output values are not finite" in tile_problem(bad, "fp32")
    sat = ok.copy()
    sat[0, 0, 3, 3] = 65504.0  # a saturating runtime's overflow
    assert tile_problem(sat, "fp32") is None and "outside [-1, 2]" in tile_problem(sat, "fp16")


def test_fp16_guard_names_the_overflowing_tile():
    """True fp16 arithmetic (torch half on the CPU) overflows in the one tile that holds white pixels: that tile
    is named and recomputed in fp32 (the result then equals fp32), or refused with one line.

    (ONNX Runtime's CPU provider cannot show this: it runs an fp16 graph's ops in fp32 between casts it inserts
    and then fuses, so exp(12.5 * 0.92) does not overflow there; see docs/DEPLOY.md. The CLI test below makes
    the fp16 *weights* overflow instead, which ONNX Runtime does store in fp16.)"""
    img = np.full((32, 64, 3), 90, np.uint8)  # mid grey: Y ~ 0.37, safe in fp16
    img[8:20, 56:62] = 255  # white (Y = 235/255 = 0.92) only in the LR columns 56..61
    plan = TilePlan(16, 8)  # windows of 32: columns 0-32, 8-40, 24-56, 32-64 (only the last sees the white)
    fp16 = TorchTileRunner(Overflowing(), precision="fp16")
    fp32 = TorchTileRunner(Overflowing())
    seen = []
    sr, _ = upscale_array(fp16, img, 4, plan=plan, guard=TileGuard(fp32, seen.append), name="white.png")
    assert [b.where for b in seen] == ["white.png: LR tile rows 0-32, cols 32-64"]
    assert "not finite" in seen[0].reason and seen[0].runner == "torch fp16"
    ref, _ = upscale_array(fp32, img, 4, plan=plan)
    assert np.abs(sr.astype(int) - ref.astype(int)).max() <= 1
    with pytest.raises(UserError, match="white.png: LR tile rows 0-32, cols 32-64: torch fp16 .* not finite"):
        upscale_array(fp16, img, 4, plan=plan, guard=TileGuard(None), name="white.png")
    dark = np.full((32, 64, 3), 90, np.uint8)
    seen.clear()
    upscale_array(fp16, dark, 4, plan=plan, guard=TileGuard(fp32, seen.append))
    assert seen == []  # no false alarm where fp16 is fine


def _overflowing_checkpoint(folder):
    """A LapSRN whose fp32 output is that of a normal model, while fp16 overflows: the first conv is scaled
    by 1e7 and the conv that reads its (LeakyReLU-ed, positively homogeneous) output by 1e-7."""
    model, cfg = _model()
    with torch.no_grad():
        model.trunk.input_conv.weight.mul_(1e7)
        if model.trunk.input_conv.bias is not None:
            model.trunk.input_conv.bias.mul_(1e7)
        model.trunk.levels[0].convs[0].weight.mul_(1e-7)
    return ck.save_model_checkpoint(folder, model, cfg, {"step": 0})


@pytest.mark.slow
def test_cli_fp16_onnxruntime_recomputes_or_refuses(tmp_path):
    c = _overflowing_checkpoint(tmp_path / "big")
    Image.fromarray(_photo(20, 24)).save(tmp_path / "p.png")
    extra = ["--backend", "onnxruntime", "--tile", "16", "--overlap", "4"]
    r = CliRunner().invoke(
        app, ["upscale", str(tmp_path / "p.png"), "--checkpoint", str(c), "--out", str(tmp_path / "no"),
              *extra, "--precision", "fp16", "--no-fp16-fallback"],
    )  # fmt: skip
    assert r.exit_code == 2 and "Traceback" not in r.output
    (err,) = [ln for ln in r.output.splitlines() if ln.startswith("error:")]  # after the progress line
    assert "p.png: LR tile rows 0-20, cols 0-24: onnxruntime fp16" in err and "not finite" in err
    assert not (tmp_path / "no").exists() or not list((tmp_path / "no").iterdir())  # nothing written
    r = _cli_upscale([tmp_path / "p.png"], c, tmp_path / "fb", *extra, "--precision", "fp16")
    assert "recomputed in fp32" in r.output
    _cli_upscale([tmp_path / "p.png"], c, tmp_path / "t32", "--tile", "16", "--overlap", "4")
    a, b = _read(tmp_path / "fb" / "p_x4.png"), _read(tmp_path / "t32" / "p_x4.png")
    assert np.abs(a - b).max() <= 1


def test_upscale_images_job_record(tmp_path, ckpt):
    """The library form the CLI calls: an UpscaleJob through any runner (here torch), on_done per file."""
    model, cfg, _ = ck.load_model(ckpt)
    Image.fromarray(_photo(12, 9)).save(tmp_path / "b.png")
    done = []
    job = UpscaleJob(tmp_path / "o", 4, TilePlan(8, 4), on_done=lambda s, d: done.append((s.name, d.name)))
    (out,) = upscale_images([tmp_path / "b.png"], _runner(model, cfg), job)
    assert done == [("b.png", "b_x4.png")] and out.is_file()


def _no_tensorrt_gpu() -> str | None:
    """Why the TensorRT upscale test cannot run here (None: it can)."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("pycuda") is None:
        return "tensorrt and pycuda are not installed (pip install 'fgdsr[trt]'; needs an NVIDIA GPU)"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible"
    return None


@pytest.mark.skipif(_no_tensorrt_gpu() is not None, reason=str(_no_tensorrt_gpu()))
def test_tensorrt_equals_torch_and_fp16_is_guarded(tmp_path, fd_ckpt):
    """On a GPU with TensorRT: fp32 engine tiles equal torch within one grey level; the engine is cached and
    reused; fp16 stays within a few grey levels and never writes a non-finite tile."""
    images = _inputs(tmp_path)[:2]
    common = ["--tile", "32", "--overlap", "16"]
    _cli_upscale(images, fd_ckpt, tmp_path / "torch", *common)
    trt = ["--backend", "tensorrt", "--device", "cuda", *common]
    r = _cli_upscale(images, fd_ckpt, tmp_path / "trt", *trt)
    assert "tile engine" in r.output and ": built" in r.output
    r = _cli_upscale(images, fd_ckpt, tmp_path / "trt2", *trt)
    assert "reused" in r.output and ": built" not in r.output
    _cli_upscale(images, fd_ckpt, tmp_path / "trt16", *trt, "--precision", "fp16")
    for src in images:
        a = _read(tmp_path / "torch" / f"{src.stem}_x4.png")
        assert np.abs(a - _read(tmp_path / "trt" / f"{src.stem}_x4.png")).max() <= 1
        assert np.abs(a - _read(tmp_path / "trt16" / f"{src.stem}_x4.png")).max() <= 8


@pytest.mark.slow
def test_bench_upscale_script_runs(tmp_path):
    """benchmarks/bench_upscale.py at a tiny size: one row per (config, backend) with its throughput."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "u.json"
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "bench_upscale.py"), "--configs", "tiny", "--lr-size", "48x40",
         "--tile", "16", "--overlap", "8", "--repeats", "1", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert [(r["config"], r["backend"]) for r in res["rows"]] == [("tiny", "torch"), ("tiny", "onnxruntime")]
    for r in res["rows"]:
        assert r["output_mp"] == pytest.approx(48 * 40 * 16 / 1e6) and r["mp_per_s"] > 0
        assert 0 < r["network_share"] <= 1
    assert len(res["machine"]["load_average"]) == 3
