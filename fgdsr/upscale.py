"""Upscale user photos: any size, tiled with overlap, colour kept, on any backend through a tile runner.

The models see the Y channel only (as LapSRN): RGB -> YCbCr (MATLAB BT.601), the network upscales Y, Cb/Cr are
upscaled by MATLAB bicubic, then back to RGB, clipped and rounded. The network is reached through a
`TileRunner`: a callable on `(N, 1, h, w)` float32 LR Y arrays in [0, 1] -> `(N, 1, h*s, w*s)` float32. The torch
runner is here (`TorchTileRunner`); ONNX Runtime and TensorRT runners live in `trt/tile_runner.py` (this module
imports no ONNX or TensorRT).

Tiling (`TilePlan`, `axis_windows`): the LR image is cut into `tile` x `tile` cores; each core is run inside a
window of ONE static size, `tile + 2*overlap` per side, so an ONNX graph / TensorRT engine of that one shape
serves every tile, and only the core of each result is kept (the seam blending of a core crop). Windows keep
`overlap` LR pixels of context on every side of the core; at the image border they are shifted inward instead
of padded, because padding changes what the network sees at the border (LapSRN's convolutions zero-pad; a
symmetric, replicate or reflect pad moved border pixels of the official x4 model by up to 58, 78 or 115 grey
levels: benchmarks/tile_padding.py, docs/DEPLOY.md). So with an overlap of at least the receptive field (LapSRN x4, depth 10: about 20 LR pixels)
tiling changes nothing but float rounding. An image side shorter than the window is one window of that side's
own length (a second static shape for that image, cached like the first).
Tile and overlap are rounded up to multiples of the FD Class-Module's sub-image (`align` = cfg.class_patch) so
its per-sub-image classes see the same sub-images as untiled; an FD image side longer than the window and not
a multiple of `align` is replicate-padded at the bottom/right to the next multiple (what the Class-Module itself
does for its classes; the trunk sees those < align pixels, so the last LR pixels there can differ from untiled).

fp16 guard (`TileGuard`): a reduced-precision tile whose output is non-finite or saturated (outside
SATURATION_RANGE, where an fp16 overflow lands) is named and recomputed by the fallback runner (fp32), or,
without one, refused with one line naming the tile; it is never written silently. Any tile with a non-finite
output is refused the same way at fp32.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from fgdsr.atomic import atomic_path
from fgdsr.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_TILE = 256  # LR pixels per tile side (x4 LapSRN, 64 channels: ~70 MB per 2x-level activation)
DEFAULT_OVERLAP = 32  # LR context pixels on each side of a tile (> LapSRN's receptive-field radius)
# An SR network maps [0, 1] to about [0, 1] (ringing overshoots by a few %); an fp16 overflow gives inf or, where
# a runtime saturates, values near +-65504. A reduced-precision tile with any value outside this range is bad.
SATURATION_RANGE = (-1.0, 2.0)
CHROMA_CONTEXT = 4  # LR pixels around a core for the bicubic CbCr/alpha (its kernel reaches 2)


class TileRunner(Protocol):
    """The Y network on tiles: `(N, 1, h, w)` float32 LR Y in [0, 1] -> `(N, 1, h*s, w*s)` float32."""

    label: str  # what runs, for messages: 'torch fp32', 'onnxruntime fp16'
    precision: str  # 'fp32' | 'fp16'; reduced-precision outputs are range-checked by the guard

    def __call__(self, y: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class TilePlan:
    """How an image is cut. tile: core side in LR pixels (None or 0: the whole image in one window);
    overlap: LR context per side; align: tile and overlap are rounded up to multiples of it."""

    tile: int | None = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    align: int = 1

    def rounded(self) -> TilePlan:
        if not self.tile or self.tile <= 0:
            return replace(self, tile=None, overlap=0)
        return replace(
            self, tile=_round_up(self.tile, self.align), overlap=_round_up(self.overlap, self.align)
        )

    @property
    def window(self) -> int | None:
        """The static window side (LR pixels) = tile + 2 * overlap after rounding; None without tiling."""
        p = self.rounded()
        return None if p.tile is None else p.tile + 2 * p.overlap


@dataclass(frozen=True)
class BadTile:
    """A tile whose network output was refused: where (image and LR window) and why."""

    where: str
    reason: str
    runner: str


@dataclass(frozen=True)
class TileGuard:
    """fallback: the runner that recomputes a bad reduced-precision tile (None: refuse it);
    on_recompute: told about every tile recomputed by the fallback."""

    fallback: TileRunner | None = None
    on_recompute: Callable[[BadTile], None] | None = None


def _round_up(v: int, m: int) -> int:
    return int(math.ceil(v / m) * m)


def axis_windows(n: int, plan: TilePlan) -> tuple[int, list[tuple[int, int, int]]]:
    """One axis of length `n`: -> (window size, [(window start, core start, core end), ...]) in LR pixels.

    Every window has the returned size; cores tile [0, n) and each lies inside its window with `overlap`
    context or the image border on both sides. A window may reach past `n` only for align > 1 (FD), by less
    than `align` pixels (replicate-padded by the caller).
    """
    plan = plan.rounded()
    size = plan.window
    if size is None or n <= size:
        return n, [(0, 0, n)]
    padded = _round_up(n, plan.align)
    out: list[tuple[int, int, int]] = []
    for c0 in range(0, n, plan.tile):
        c1 = min(c0 + plan.tile, n)
        start = max(0, min(c0 - plan.overlap, padded - size))  # shifted inward at the end: no padding
        if out and out[-1][0] == start:  # the last cores can share one window: run it once
            out[-1] = (start, out[-1][1], c1)
        else:
            out.append((start, c0, c1))
    return size, out


def window_shape(h: int, w: int, plan: TilePlan) -> tuple[int, int, int, int]:
    """The static `(1, 1, h, w)` shape of every window of an (h, w) LR image under `plan`."""
    return (1, 1, axis_windows(h, plan)[0], axis_windows(w, plan)[0])


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


class TorchTileRunner:
    """A torch Y function (see `model_fn`) as a TileRunner, on `device` in `precision` (fp16: CUDA only)."""

    def __init__(self, fn: Callable, device: str = "cpu", precision: str = "fp32") -> None:
        import torch

        self.torch = torch
        self.fn, self.device, self.precision = fn, torch.device(device), precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.label = f"torch {precision}"

    def __call__(self, y: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).to(self.device, self.dtype)
            return self.fn(t).float().cpu().numpy()


def tile_problem(out: np.ndarray, precision: str) -> str | None:
    """Why a tile's network output must not be written (None: it is fine)."""
    bad = ~np.isfinite(out)
    if bad.any():
        return f"{int(bad.sum())} of {out.size} output values are not finite (NaN/inf)"
    if precision != "fp32":
        lo, hi = SATURATION_RANGE
        sat = (out < lo) | (out > hi)
        if sat.any():
            return (f"{int(sat.sum())} of {out.size} output values are outside [{lo:g}, {hi:g}] "
                    f"(range {float(out.min()):.4g} .. {float(out.max()):.4g}): saturated")  # fmt: skip
    return None


def _run_guarded(runner: TileRunner, y: np.ndarray, guard: TileGuard | None, where: str) -> np.ndarray:
    """runner(y), checked; a bad tile goes to the guard's fallback or ends as a one-line UserError."""
    out = runner(y)
    problem = tile_problem(out, runner.precision)
    if problem is None:
        return out
    bad = BadTile(where, problem, runner.label)
    fallback = guard.fallback if guard is not None else None
    if fallback is None:
        hint = "rerun with --precision fp32" if runner.precision != "fp32" else "the model itself is broken"
        raise UserError(f"{where}: {runner.label} {problem}; nothing written for this image; {hint}")
    out = fallback(y)
    again = tile_problem(out, fallback.precision)
    if again is not None:
        raise UserError(f"{where}: {runner.label} {problem}, and {fallback.label} too ({again}); "
                        "nothing written for this image; the model itself is broken")  # fmt: skip
    if guard.on_recompute is not None:
        guard.on_recompute(bad)
    return out


def _peak(rgb: np.ndarray) -> float:
    peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(np.dtype(rgb.dtype))
    if peak is None or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"upscale_array: expected (H, W, 3) uint8/uint16, got {rgb.shape} {rgb.dtype}")
    return peak


def _window_y(rgb: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], peak: float) -> np.ndarray:
    """The LR Y (1, 1, rows, cols) float32 of a window; beyond the image: the last row/column repeated."""
    import torch

    from fgdsr.data.color import rgb2ycbcr

    h, w = rgb.shape[:2]
    ri = np.minimum(np.arange(rows[0], rows[0] + rows[1]), h - 1)
    ci = np.minimum(np.arange(cols[0], cols[0] + cols[1]), w - 1)
    t = torch.from_numpy(rgb[np.ix_(ri, ci)].astype(np.float64) / peak).permute(2, 0, 1)[None]
    return rgb2ycbcr(t)[:, :1].float().numpy()


def _to_t(a: np.ndarray, peak: float) -> torch.Tensor:
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a).astype(np.float64) / peak)
    return (t.permute(2, 0, 1) if t.ndim == 3 else t[None])[None]


def _to_np(t: torch.Tensor, peak: float, dtype) -> np.ndarray:
    import torch

    a = torch.floor(t[0] * peak + 0.5).clamp(0, peak).numpy()  # round half up (MATLAB)
    return (a.transpose(1, 2, 0) if a.shape[0] == 3 else a[0]).astype(dtype)


def _compose(
    y_core: np.ndarray, rgb: np.ndarray, alpha, core: tuple[int, int, int, int], scale: int, peak: float
):
    """SR RGB (and alpha) of one core (r0, r1, c0, c1): Y from the network, CbCr/alpha bicubic from the image
    around the core (CHROMA_CONTEXT pixels, clipped at the border where MATLAB's symmetric padding applies)."""
    import torch

    from fgdsr.data.color import rgb2ycbcr, ycbcr2rgb
    from fgdsr.data.imresize import imresize

    h, w = rgb.shape[:2]
    r0, r1, c0, c1 = core
    a0, a1 = max(0, r0 - CHROMA_CONTEXT), min(h, r1 + CHROMA_CONTEXT)
    b0, b1 = max(0, c0 - CHROMA_CONTEXT), min(w, c1 + CHROMA_CONTEXT)
    crop = (slice(None), slice(None), slice((r0 - a0) * scale, (r1 - a0) * scale),
            slice((c0 - b0) * scale, (c1 - b0) * scale))  # fmt: skip
    cbcr = imresize(rgb2ycbcr(_to_t(rgb[a0:a1, b0:b1], peak))[:, 1:], scale=scale)[crop]
    ycc = torch.cat([torch.from_numpy(y_core).double(), cbcr], dim=1)
    sr = _to_np(ycbcr2rgb(ycc).clamp(0.0, 1.0), peak, rgb.dtype)
    if alpha is None:
        return sr, None
    up = imresize(_to_t(alpha[a0:a1, b0:b1], peak), scale=scale).clamp(0.0, 1.0)[crop]
    return sr, _to_np(up, peak, alpha.dtype)


def upscale_array(
    runner: TileRunner,
    rgb: np.ndarray,
    scale: int,
    alpha: np.ndarray | None = None,
    plan: TilePlan = TilePlan(),
    guard: TileGuard | None = None,
    name: str = "image",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Upscale an RGB image window by window through `runner`.

    rgb: (H, W, 3) uint8 or uint16; alpha: (H, W) of the same dtype or None; name: for messages.
    -> (SR RGB (H*s, W*s, 3), SR alpha (H*s, W*s) or None), same dtype as the input.
    """
    peak = _peak(rgb)
    h, w = rgb.shape[:2]
    (wh, rows), (ww, cols) = axis_windows(h, plan), axis_windows(w, plan)
    out = np.empty((h * scale, w * scale, 3), dtype=rgb.dtype)
    out_a = np.empty((h * scale, w * scale), dtype=rgb.dtype) if alpha is not None else None
    for rs, r0, r1 in rows:
        for cs, c0, c1 in cols:
            where = f"{name}: LR tile rows {rs}-{rs + wh}, cols {cs}-{cs + ww}"
            y_sr = _run_guarded(runner, _window_y(rgb, (rs, wh), (cs, ww), peak), guard, where)
            if y_sr.shape != (1, 1, wh * scale, ww * scale):
                raise ValueError(f"{runner.label}: output {y_sr.shape} for a {wh}x{ww} tile at x{scale}")
            y_core = y_sr[:, :, (r0 - rs) * scale : (r1 - rs) * scale, (c0 - cs) * scale : (c1 - cs) * scale]
            sr, sr_a = _compose(y_core, rgb, alpha, (r0, r1, c0, c1), scale, peak)
            out[r0 * scale : r1 * scale, c0 * scale : c1 * scale] = sr
            if out_a is not None:
                out_a[r0 * scale : r1 * scale, c0 * scale : c1 * scale] = sr_a
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


@dataclass(frozen=True)
class UpscaleJob:
    """What to do with the images: write into `out_dir` at `scale` with `plan`, guard reduced precision;
    on_done(src, dst) after each file."""

    out_dir: Path
    scale: int
    plan: TilePlan = TilePlan()
    guard: TileGuard | None = None
    on_done: Callable[[Path, Path], None] | None = None


def check_inputs(images: list[str | Path], plan: TilePlan) -> list[Path]:
    """Every input exists and the plan is sane, before any model work, so a typo fails fast in one line."""
    paths = [Path(p) for p in images]
    if not paths:
        raise UserError("upscale: no input image given; pass one or more image files")
    for p in paths:
        if not p.is_file():
            raise UserError(f"{p}: no such image file; check the path")
    if plan.tile is not None and plan.tile < 0:
        raise UserError(f"--tile {plan.tile}: must be positive (or 0 for no tiling)")
    if plan.overlap < 0:
        raise UserError(f"--overlap {plan.overlap}: must be 0 or more")
    return paths


def upscale_images(images: list[str | Path], runner: TileRunner, job: UpscaleJob) -> list[Path]:
    """Upscale every image through `runner` into `job.out_dir`; -> written paths (one file per input)."""
    paths = check_inputs(images, job.plan)
    written = []
    for p in paths:
        rgb, alpha, gray = read_for_upscale(p)
        sr, sr_a = upscale_array(runner, rgb, job.scale, alpha, job.plan, job.guard, name=str(p))
        target = Path(job.out_dir) / f"{p.stem}_x{job.scale}{'.tif' if sr.dtype == np.uint16 else '.png'}"
        written.append(write_result(target, sr, sr_a, gray))
        if job.on_done is not None:
            job.on_done(p, target)
    return written


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
    """Upscale `images` with the checkpoint's model in torch (fp32) into `out_dir`; -> written paths.

    The library form of `fgdsr upscale --backend torch`; other backends: `trt.tile_runner.open_runners`.
    """
    from fgdsr.checkpoint import load_model

    check_inputs(images, TilePlan(tile, overlap))
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU visible here; use --device cpu")
    model, cfg, _meta = load_model(checkpoint, device=device)
    s = scale or cfg.scale
    runner = TorchTileRunner(model_fn(model, cfg, s), device)
    job = UpscaleJob(Path(out_dir), s, TilePlan(tile, overlap, class_align(cfg)), on_done=on_done)
    return upscale_images(images, runner, job)


def class_align(cfg) -> int:
    """The tile alignment a model of `cfg` needs: the FD Class-Module's sub-image (LR pixels), else 1."""
    return int(cfg.class_patch) if cfg.loss == "fd" else 1
