"""`fgdsr upscale`: tiled == untiled (up to measured border effects), colour/alpha/16-bit handling, CLI errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fgdsr import checkpoint as ck
from fgdsr.config import TrainConfig
from fgdsr.errors import UserError
from fgdsr.models import build_model
from fgdsr.upscale import model_fn, upscale_array, upscale_file
from orchestrator.cli import app


def _model(loss: str = "l1", depth: int = 2, seed: int = 0):
    cfg = TrainConfig().replace(depth=depth, channels=8, scale=4, loss=loss, class_patch=8)
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():  # random but non-trivial weights, so tiling errors would show
        for p in model.trunk.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, cfg


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model, cfg = _model()
    return ck.save_model_checkpoint(tmp_path_factory.mktemp("ck") / "c", model, cfg, {"step": 0})


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image with edges (uint8 (h, w, 3))."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None] * np.array([1.0, 0.6, -0.8])
    base += (xx > w // 2)[..., None] * 40
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("loss", ["l1", "fd"])
def test_tiled_equals_untiled_with_enough_overlap(loss):
    model, cfg = _model(loss)
    fn = model_fn(model, cfg, 4)
    img = _photo(45, 70)
    align = cfg.class_patch if loss == "fd" else 1
    full, _ = upscale_array(fn, img, 4, tile=None, align=align)
    tiled, _ = upscale_array(fn, img, 4, tile=16, overlap=16, align=align)
    assert full.shape == (180, 280, 3) and full.dtype == np.uint8
    diff = np.abs(full.astype(int) - tiled.astype(int))
    assert diff.max() <= 1  # float rounding at .5 only
    assert (diff > 0).mean() < 1e-3


def test_tiling_without_overlap_shows_border_effects():
    """The overlap matters: with none, tile seams differ (this is what the overlap removes)."""
    model, cfg = _model(depth=4)
    fn = model_fn(model, cfg, 4)
    img = _photo(40, 40)
    full, _ = upscale_array(fn, img, 4, tile=None)
    seams, _ = upscale_array(fn, img, 4, tile=16, overlap=0)
    assert np.abs(full.astype(int) - seams.astype(int)).max() > 1


def test_colour_kept_cbcr_is_bicubic():
    """With the identity as Y model... we use a real model, then check chroma equals bicubic chroma."""
    from fgdsr.data.color import rgb2ycbcr
    from fgdsr.data.imresize import imresize

    model, cfg = _model()
    img = _photo(24, 20)
    sr, _ = upscale_array(model_fn(model, cfg, 4), img, 4, tile=None)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
    cbcr_ref = imresize(rgb2ycbcr(t)[:, 1:], scale=4)
    cbcr_sr = rgb2ycbcr(torch.from_numpy(sr).permute(2, 0, 1)[None].double() / 255)[:, 1:]
    # uint8 rounding and clipping of RGB move chroma by a few levels at most
    assert (cbcr_sr - cbcr_ref).abs().mean() * 255 < 1.0


def test_files_rgb_alpha_gray_16bit(tmp_path, ckpt):
    img = _photo(20, 30)
    Image.fromarray(img).save(tmp_path / "rgb.png")
    rgba = np.concatenate([img, np.linspace(0, 255, 20 * 30).reshape(20, 30, 1).astype(np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(img[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(img[..., 0].astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    out = upscale_file(
        [tmp_path / n for n in ("rgb.png", "alpha.png", "gray.png", "gray16.png")],
        ckpt,
        tmp_path / "out",
        tile=8,
    )
    assert [p.name for p in out] == ["rgb_x4.png", "alpha_x4.png", "gray_x4.png", "gray16_x4.tif"]
    with Image.open(out[0]) as im:
        assert im.mode == "RGB" and im.size == (120, 80)
    with Image.open(out[1]) as im:
        assert im.mode == "RGBA" and im.size == (120, 80)
        a = np.asarray(im)[..., 3].astype(int)
    assert a[:8].mean() < 30 and a[-8:].mean() > 225  # the alpha ramp (top to bottom) survives
    with Image.open(out[2]) as im:
        assert im.mode == "L" and im.size == (120, 80)
    import tifffile

    g16 = tifffile.imread(out[3])
    assert g16.dtype == np.uint16 and g16.shape == (80, 120)
    # 16-bit precision is used: the result is not just multiples of 257
    assert (g16 % 257 != 0).mean() > 0.5
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


def test_cli_upscale_and_one_line_errors(tmp_path, ckpt):
    Image.fromarray(_photo(10, 12)).save(tmp_path / "a.png")
    runner = CliRunner()
    r = runner.invoke(
        app, ["upscale", str(tmp_path / "a.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "a_x4.png").is_file()
    for args in (
        [str(tmp_path / "missing.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")],
        [str(tmp_path / "a.png"), "--checkpoint", str(tmp_path / "nockpt"), "--out", str(tmp_path / "o")],
        [str(tmp_path / "a.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--scale", "8"],
    ):
        r = runner.invoke(app, ["upscale", *args])
        assert r.exit_code == 2, r.output
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), r.output


def test_untiled_equals_the_evaluation_upscaler():
    """`fgdsr upscale` and `fgdsr evaluate` (ModelUpscaler) give the same pixels for an 8-bit RGB image."""
    from fgdsr.inference import ModelUpscaler

    model, cfg = _model()
    img = _photo(30, 26, seed=3)
    ours, _ = upscale_array(model_fn(model, cfg, 4), img, 4, tile=None)
    ref = ModelUpscaler(model, 4)(img)
    assert np.array_equal(ours, ref)
    tiled, _ = upscale_array(model_fn(model, cfg, 4), img, 4, tile=8, overlap=8)
    assert np.abs(tiled.astype(int) - ref.astype(int)).max() <= 1
