"""Upscale user photos with a trained checkpoint: any size, tiled with overlap, colour kept.

The models see the Y channel only (as LapSRN): RGB -> YCbCr (MATLAB BT.601), the model upscales Y, Cb/Cr are
upscaled by MATLAB bicubic, then back to RGB, clipped and rounded. Everything is done per tile: the LR image is
cut into `tile` x `tile` cores, each run with `overlap` extra LR pixels of context on every side, and only the
core of each result is kept, so memory is bounded by the tile size (plus the output array). With an overlap of
at least the receptive field (LapSRN x4, depth 10: about 20 LR pixels) tiling changes nothing but float
rounding (measured in tests/test_upscale.py). Tile and overlap are rounded up to multiples of the FD
Class-Module's sub-image (cfg.class_patch) so its per-sub-image classes see the same sub-images as untiled.

Input handling (what `fgdsr upscale` does with each kind of file):
- 8-bit RGB, grayscale, palette: handled (grayscale stays one channel).
- alpha (RGBA, LA, palette with transparency): handled; alpha is upscaled by bicubic and written as RGBA PNG.
- 16-bit: handled at full precision where it can be read (16-bit grayscale, 16-bit colour TIFF) and written as
  a 16-bit TIFF; a 16-bit colour PNG is refused (Pillow decodes it to 8 bits only): save it as 16-bit TIFF.
Outputs are PNG (lossless) named `<stem>_x<scale>.png` (`.tif` for 16-bit), written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fgdsr.atomic import atomic_path
from fgdsr.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_TILE = 256  # LR pixels per tile side (x4 LapSRN, 64 channels: ~70 MB per 2x-level activation)
DEFAULT_OVERLAP = 32  # LR context pixels on each side of a tile (> LapSRN's receptive-field radius)


def _round_up(v: int, m: int) -> int:
    return int(math.ceil(v / m) * m)


def model_fn(model: nn.Module, cfg, scale: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """(N, 1, h, w) Y in [0, 1] -> (N, 1, h*scale, w*scale) for `scale` = cfg.scale or, for LapSRN, a lower
    power-of-two pyramid level (a x8 model also gives x2 and x4)."""
    if scale == cfg.scale:
        return model
    trunk = getattr(model, "trunk", model)
    levels = int(round(math.log2(4 if cfg.scale == 3 else cfg.scale)))
    if hasattr(trunk, "forward_pyramid") and scale in [2 ** (i + 1) for i in range(levels - 1)]:
        level = int(math.log2(scale)) - 1
        return lambda y: trunk.forward_pyramid(y)[0][level]
    options = [cfg.scale] + (
        [2 ** (i + 1) for i in range(levels - 1)] if hasattr(trunk, "forward_pyramid") else []
    )
    raise UserError(
        f"--scale {scale}: this checkpoint upscales x{cfg.scale}; use --scale one of {sorted(options)}"
    )


def _upscale_region(fn, rgb: torch.Tensor, extra: torch.Tensor | None, scale: int):
    """rgb (1, 3, h, w) float64 in [0, 1] -> (sr rgb (1, 3, sh, sw) clipped, extra channels bicubic or None)."""
    import torch

    from fgdsr.data.color import rgb2ycbcr, ycbcr2rgb
    from fgdsr.data.imresize import imresize

    ycc = rgb2ycbcr(rgb)
    y = fn(ycc[:, :1].float()).double()
    cbcr = imresize(ycc[:, 1:], scale=scale)
    sr = ycbcr2rgb(torch.cat([y, cbcr], dim=1)).clamp(0.0, 1.0)
    up = imresize(extra, scale=scale).clamp(0.0, 1.0) if extra is not None else None
    return sr, up


def upscale_array(
    fn: Callable[[torch.Tensor], torch.Tensor],
    rgb: np.ndarray,
    scale: int,
    alpha: np.ndarray | None = None,
    tile: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    align: int = 1,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Upscale an RGB image tile by tile.

    rgb: (H, W, 3) uint8 or uint16; alpha: (H, W) of the same dtype or None. fn: the Y model (see model_fn).
    tile: core size in LR pixels (None or 0: the whole image at once). overlap: LR context per side.
    align: tile and overlap are rounded up to multiples of it (the FD Class-Module's sub-image).
    -> (SR RGB (H*s, W*s, 3), SR alpha (H*s, W*s) or None), same dtype as the input.
    """
    import torch

    dtype = rgb.dtype
    peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(np.dtype(dtype))
    if peak is None or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"upscale_array: expected (H, W, 3) uint8/uint16, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    if not tile or tile <= 0:
        tile, overlap = max(h, w), 0
    tile, overlap = _round_up(tile, align), _round_up(overlap, align) if overlap else 0
    out = np.empty((h * scale, w * scale, 3), dtype=dtype)
    out_a = np.empty((h * scale, w * scale), dtype=dtype) if alpha is not None else None

    def to_t(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a).astype(np.float64) / peak)
        return (t.permute(2, 0, 1) if t.ndim == 3 else t[None])[None].to(device)

    def to_np(t: torch.Tensor) -> np.ndarray:
        a = torch.floor(t[0] * peak + 0.5).clamp(0, peak).to("cpu").numpy()  # round half up (MATLAB)
        return (a.transpose(1, 2, 0) if a.shape[0] == 3 else a[0]).astype(dtype)

    with torch.no_grad():
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                a0, a1 = max(0, y0 - overlap), min(h, y1 + overlap)
                b0, b1 = max(0, x0 - overlap), min(w, x1 + overlap)
                ext = to_t(alpha[a0:a1, b0:b1]) if alpha is not None else None
                sr, up = _upscale_region(fn, to_t(rgb[a0:a1, b0:b1]), ext, scale)
                core = (
                    slice(None),
                    slice(None),
                    slice((y0 - a0) * scale, (y1 - a0) * scale),
                    slice((x0 - b0) * scale, (x1 - b0) * scale),
                )
                out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = to_np(sr[core])
                if up is not None:
                    out_a[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = to_np(up[core])
    return out, out_a


# ------------------------------------------------------------------------------------------- files


def read_for_upscale(path: Path) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """-> (RGB (H, W, 3) uint8 or uint16, alpha (H, W) uint8 or None, grayscale?)."""
    from PIL import Image

    from fgdsr.data.io import read_image

    rgb = read_image(path, keep_16bit=True)  # one-line UserError for missing/corrupt/unsupported files
    with Image.open(path) as img:
        mode = img.mode
        has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
        alpha = None
        if has_alpha:
            a = np.asarray(img.convert("RGBA").getchannel("A"), dtype=np.uint8)
            alpha = a if rgb.dtype == np.uint8 else a.astype(np.uint16) * 257
    gray = mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
    return rgb, alpha, gray


def _write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def write_result(path: Path, rgb: np.ndarray, alpha: np.ndarray | None, gray: bool) -> Path:
    """PNG for 8-bit (L, RGB or RGBA), 16-bit TIFF for 16-bit; atomic."""
    if rgb.dtype == np.uint16:
        import tifffile

        data = rgb[..., 0] if gray and alpha is None else rgb
        if alpha is not None:
            data = np.concatenate([rgb, alpha[..., None]], axis=2)
        return _write_atomic(
            path,
            lambda p: tifffile.imwrite(
                p,
                np.ascontiguousarray(data),
                photometric=("minisblack" if data.ndim == 2 else "rgb"),
                extrasamples=("unassalpha",) if alpha is not None else None,
            ),
        )
    from PIL import Image

    if alpha is not None:
        if gray:
            img = Image.fromarray(np.ascontiguousarray(np.stack([rgb[..., 0], alpha], axis=2)), mode="LA")
        else:
            img = Image.fromarray(
                np.ascontiguousarray(np.concatenate([rgb, alpha[..., None]], axis=2)), mode="RGBA"
            )
    else:
        img = Image.fromarray(np.ascontiguousarray(rgb[..., 0] if gray else rgb))
    return _write_atomic(path, lambda p: img.save(p, format="PNG"))


def upscale_file(
    images: list[str | Path],
    checkpoint: str | Path,
    out_dir: str | Path,
    scale: int | None = None,
    tile: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    device: str = "cpu",
    on_done: Callable[[Path, Path], None] | None = None,
) -> list[Path]:
    """Upscale every image in `images` with the checkpoint's model into `out_dir`; -> written paths.

    Every input is checked (exists, readable) before any model work, so a typo fails fast in one line.
    """
    from fgdsr.checkpoint import load_model

    paths = [Path(p) for p in images]
    if not paths:
        raise UserError("upscale: no input image given; pass one or more image files")
    for p in paths:
        if not p.is_file():
            raise UserError(f"{p}: no such image file; check the path")
    if tile is not None and tile < 0:
        raise UserError(f"--tile {tile}: must be positive (or 0 for no tiling)")
    if overlap < 0:
        raise UserError(f"--overlap {overlap}: must be 0 or more")
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU visible here; use --device cpu")
    model, cfg, _meta = load_model(checkpoint, device=device)
    s = scale or cfg.scale
    fn = model_fn(model, cfg, s)
    align = cfg.class_patch if getattr(model, "class_module", None) is not None else 1
    out = Path(out_dir)
    written = []
    for p in paths:
        rgb, alpha, gray = read_for_upscale(p)
        sr, sr_a = upscale_array(fn, rgb, s, alpha, tile, overlap, align, device)
        target = out / f"{p.stem}_x{s}{'.tif' if sr.dtype == np.uint16 else '.png'}"
        written.append(write_result(target, sr, sr_a, gray))
        if on_done is not None:
            on_done(p, target)
    return written
