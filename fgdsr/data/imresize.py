"""MATLAB-exact bicubic `imresize` in torch (batched, CPU or GPU), plus `modcrop`.

MATLAB's algorithm (imresize.m, `contributions`), per axis:
- Keys cubic kernel with a = -0.5, support 4 input pixels;
- when downscaling (scale < 1) the kernel is stretched by 1/scale and scaled by `scale` (antialiasing);
- output pixel x (1-based) samples input position u = x / scale + 0.5 (1 - 1 / scale);
- weights are normalised to sum 1 per output pixel; out-of-range taps are mirrored (symmetric padding,
  `[1..n, n..1]`);
- the axis with the smaller scale is resized first (rows first on ties).

`torch.nn.functional.interpolate(antialias=True)` differs near the borders (it renormalises truncated
taps instead of mirroring), which moves Set5 PSNR by a few hundredths of a dB, hence this module.

Each axis is a linear map, precomputed once per (in_size, out_size, scale) as a dense (out, in) matrix
with the mirroring folded in, and applied as a matmul (or, for large sizes, as a gather over the P taps).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

# Above this many matrix entries an axis is resized with a gather over the taps instead of a dense matmul
# (the dense matrix grows with in * out, the gather only with out * taps).
DENSE_MAX_ENTRIES = 1 << 21
# Output rows per block of the banded matmul ('band' method); below ~100 outputs one dense block is cheaper.
TILE_ROWS = 64


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel, a = -0.5 (MATLAB's `cubic`)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


@lru_cache(maxsize=1024)
def contributions(in_len: int, out_len: int, scale: float, antialias: bool = True) -> tuple[np.ndarray, ...]:
    """MATLAB's per-axis taps: `(indices (out, P) int64 0-based, weights (out, P) float64)`.

    Indices are already mirrored into [0, in_len); columns that are zero for every output are dropped.
    """
    kernel_width = 4.0
    if scale < 1 and antialias:
        width = kernel_width / scale

        def h(x: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * x)

    else:
        width = kernel_width
        h = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    w = h(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    # symmetric padding: aux = [1..n, n..1]; index = aux(mod(idx - 1, 2n) + 1)
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = aux[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(w != 0, axis=0)
    return idx[:, keep], w[:, keep]


@lru_cache(maxsize=1024)
def weight_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense (out, in) float64 matrix of one axis: `out = M @ in` (mirrored taps accumulated)."""
    idx, w = contributions(in_len, out_len, scale, antialias)
    m = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), idx.shape[1])
    np.add.at(m, (rows, idx.ravel()), w.ravel())
    return m


@lru_cache(maxsize=1024)
def band_tiles(in_len: int, out_len: int, scale: float, antialias: bool = True) -> tuple[tuple, ...]:
    """The dense matrix cut into row blocks, each with only the input span it touches:
    `((r0, r1, c0, c1, M[r0:r1, c0:c1]), ...)`. Multiplying the blocks costs ~out * (block / scale + taps)
    instead of out * in: the matrix is a band (each output uses `taps` neighbouring inputs)."""
    m = weight_matrix(in_len, out_len, scale, antialias)
    block = TILE_ROWS if out_len > 1.5 * TILE_ROWS else out_len
    tiles = []
    for r0 in range(0, out_len, block):
        r1 = min(out_len, r0 + block)
        cols = np.flatnonzero(np.any(m[r0:r1] != 0, axis=0))
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        tiles.append((r0, r1, c0, c1, m[r0:r1, c0:c1]))
    return tuple(tiles)


_TENSORS: dict[tuple, torch.Tensor] = {}


def _tensor(kind: str, key: tuple, dtype: torch.dtype, device: torch.device):
    """The cached torch copy of a table (kind 'dense', 'band', 'idx' or 'w') on `device` with `dtype`."""
    ck = (kind, key, dtype, str(device))
    t = _TENSORS.get(ck)
    if t is None:
        if kind == "dense":
            t = torch.as_tensor(weight_matrix(*key), dtype=dtype, device=device)
        elif kind == "band":
            t = [
                (r0, r1, c0, c1, torch.as_tensor(m, dtype=dtype, device=device))
                for r0, r1, c0, c1, m in band_tiles(*key)
            ]
        elif kind == "idx":
            t = torch.as_tensor(contributions(*key)[0], dtype=torch.long, device=device)
        else:
            t = torch.as_tensor(contributions(*key)[1], dtype=dtype, device=device)
        if len(_TENSORS) > 2048:  # bound the cache: sizes of user photos are unbounded
            _TENSORS.clear()
        _TENSORS[ck] = t
    return t


def resize_axis(
    x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool = True, method: str = "auto"
) -> torch.Tensor:
    """Resize `x` (N, C, H, W) along `dim` (2 = H, 3 = W) to `out_len`, MATLAB bicubic.

    method: 'dense' (matmul with the (out, in) matrix), 'band' (block matmuls over the band of that
    matrix), 'gather' (sum over the P taps) or 'auto' ('band', or 'gather' for huge sizes).
    """
    in_len = x.shape[dim]
    key = (in_len, out_len, float(scale), bool(antialias))
    if method == "auto":
        method = "band" if in_len * out_len <= DENSE_MAX_ENTRIES else "gather"
    if method == "band":
        tiles = _tensor("band", key, x.dtype, x.device)
        if len(tiles) == 1:
            _, _, c0, c1, m = tiles[0]
            return torch.matmul(x[..., c0:c1], m.t()) if dim == 3 else torch.matmul(m, x[..., c0:c1, :])
        shape = list(x.shape)
        shape[dim] = out_len
        out = x.new_empty(shape)
        for r0, r1, c0, c1, m in tiles:
            if dim == 3:
                out[..., r0:r1] = torch.matmul(x[..., c0:c1], m.t())
            else:
                out[..., r0:r1, :] = torch.matmul(m, x[..., c0:c1, :])
        return out
    if method == "dense":
        m = _tensor("dense", key, x.dtype, x.device)
        if dim == 3:
            return torch.matmul(x, m.t())
        return torch.matmul(m, x)
    idx = _tensor("idx", key, x.dtype, x.device)  # (out, P)
    w = _tensor("w", key, x.dtype, x.device)
    if dim == 3:
        g = x[..., idx]  # (N, C, H, out, P)
        return (g * w).sum(-1)
    g = x[:, :, idx, :]  # (N, C, out, P, W)
    return (g * w[:, :, None]).sum(-2)


def output_size(in_hw: tuple[int, int], scale: float | tuple[float, float]) -> tuple[int, int]:
    """MATLAB's `ceil(scale * size)`; a tiny tolerance absorbs 1/3-style float error (255 * (1/3) -> 85)."""
    sh, sw = (scale, scale) if not isinstance(scale, (tuple, list)) else scale
    return (int(math.ceil(in_hw[0] * sh - 1e-9)), int(math.ceil(in_hw[1] * sw - 1e-9)))


def imresize(
    x: torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
    round_passes: bool = False,
    method: str = "auto",
) -> torch.Tensor:
    """MATLAB `imresize(x, scale, 'bicubic')` or `imresize(x, size, 'bicubic')` for x (N, C, H, W) float.

    Values keep their range (any range; no clipping). Give exactly one of `scale` (a number or (sh, sw);
    output = ceil(scale * size)) and `size` ((H, W); per-axis scale = out / in, as MATLAB). A 3-D (C, H, W)
    or 2-D (H, W) tensor is accepted and returned with the same rank. Runs in x's dtype and device
    (use float64 for bit-level MATLAB agreement).

    round_passes: emulate MATLAB on uint8 images, which rounds (half up) and clips to 0..255 after each
    axis pass; x must then hold 0..255 values. See `imresize_uint8`.
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of scale= or size=")
    if not torch.is_floating_point(x):
        raise TypeError(f"imresize expects a floating tensor, got {x.dtype} (see imresize_uint8)")
    rank = x.ndim
    if rank == 2:
        x = x[None, None]
    elif rank == 3:
        x = x[None]
    elif rank != 4:
        raise ValueError(f"imresize: expected (N, C, H, W), got {tuple(x.shape)}")
    in_hw = (x.shape[2], x.shape[3])
    if size is not None:
        out_hw = (int(size[0]), int(size[1]))
        scales = (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    else:
        scales = (
            (float(scale), float(scale)) if not isinstance(scale, (tuple, list)) else tuple(map(float, scale))
        )
        out_hw = output_size(in_hw, scales)
    if min(out_hw) < 1 or min(scales) <= 0:
        raise ValueError(f"imresize: output size {out_hw} from input {in_hw} is empty")
    order = (2, 3) if scales[0] <= scales[1] else (3, 2)  # MATLAB: smaller scale first, rows on ties
    for dim in order:
        k = dim - 2
        if out_hw[k] == in_hw[k] and scales[k] == 1.0:
            continue  # MATLAB skips an axis with scale 1 (identity)
        x = resize_axis(x, dim, out_hw[k], scales[k], antialias, method)
        if round_passes:
            x = torch.clamp(torch.floor(x + 0.5), 0.0, 255.0)
    if rank == 2:
        return x[0, 0]
    if rank == 3:
        return x[0]
    return x


def imresize_uint8(
    x: torch.Tensor | np.ndarray,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor | np.ndarray:
    """MATLAB `imresize` on a uint8 image: uint8 in, uint8 out, rounded after each axis pass.

    Accepts a NumPy (H, W, 3) / (H, W) uint8 array (returns the same kind) or a torch uint8 tensor
    (N, C, H, W) / (C, H, W) / (H, W). Computes in `dtype` (float64: exact).
    """
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise TypeError(f"imresize_uint8 expects uint8, got {x.dtype}")
        # the cached data set images are read-only: torch wants a writable array
        t = torch.from_numpy(x if x.flags.writeable and x.flags.c_contiguous else np.array(x))
        t = t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]
        out = imresize(t.to(dtype), scale=scale, size=size, round_passes=True).to(torch.uint8)
        out = out[0].permute(1, 2, 0) if x.ndim == 3 else out[0, 0]
        return out.contiguous().numpy()
    if x.dtype != torch.uint8:
        raise TypeError(f"imresize_uint8 expects uint8, got {x.dtype}")
    return imresize(x.to(dtype), scale=scale, size=size, round_passes=True).to(torch.uint8)


def modcrop(img, scale: int):
    """Crop the bottom/right so both sides are multiples of `scale`.

    NumPy arrays are (H, W) or (H, W, C); tensors are (..., H, W).
    """
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2], img.shape[-1]
        return img[..., : h - h % scale, : w - w % scale]
    h, w = img.shape[0], img.shape[1]
    return img[: h - h % scale, : w - w % scale, ...]
