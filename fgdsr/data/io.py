"""Read any image with Pillow as (H, W, 3) uint8; write images atomically.

Conversions (documented because they change pixel values):
- grayscale (L, 1, I, I;16, F), palette (P), LA, RGBA, CMYK, YCbCr, ... -> RGB; alpha is dropped
  (no compositing), grayscale becomes 3 equal channels;
- 16-bit images -> 8-bit by the high byte, `v >> 8`: that is what Pillow itself does when it decodes
  16-bit colour PNG/TIFF, so grayscale and colour sources agree (8 -> 16 -> 8 bit via `v * 257` is
  lossless). `keep_16bit=True` returns uint16 (H, W, 3) instead: full precision for 16-bit grayscale
  (any format) and 16-bit colour TIFF (read with tifffile, a scikit-image dependency); Pillow offers no
  lossless path for 16-bit colour PNG, which then gives a `UserError` asking for TIFF;
- 32-bit integer and float grayscale (I, F) are clipped to 0..65535 / 0..1 (-> 0..65535) first.
Corrupt, truncated, empty or non-image files raise `UserError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fgdsr.atomic import atomic_path
from fgdsr.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _sixteen_bit(img) -> np.ndarray | None:
    """(H, W[, 3]) uint16 array for 16/32-bit integer or float images, else None (8-bit path)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return np.clip(np.asarray(img, dtype=np.int64), 0, 65535).astype(np.uint16)
    if mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        return np.floor(np.clip(a, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
    return None


def _colour_16bit(img) -> bool:
    """True when Pillow will reduce a 16-bit colour source to 8 bits while decoding it."""
    try:
        raw = img.tile[0].args if hasattr(img.tile[0], "args") else img.tile[0][3]
    except (IndexError, TypeError, AttributeError):
        return False
    raw = raw[0] if isinstance(raw, tuple) else raw
    return isinstance(raw, str) and raw.startswith(("RGB;16", "RGBA;16", "RGBX;16"))


def read_image(path: str | Path, keep_16bit: bool = False) -> np.ndarray:
    """Decode `path` -> (H, W, 3) uint8 RGB (or uint16 with `keep_16bit` for 16-bit sources)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file; check the path")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes); replace it with a valid image")
    try:
        with Image.open(path) as img:
            if keep_16bit and _colour_16bit(img):
                return _read_colour_16bit(path, img.format)
            img.load()  # decode now: truncated data fails here, not later
            wide = _sixteen_bit(img)
            if wide is None:
                if img.mode in ("LA", "La"):
                    rgb = img.getchannel(0).convert("RGB")  # alpha dropped, gray kept as is
                elif img.mode in ("RGBA", "RGBa", "P", "PA"):
                    rgb = img.convert("RGBA").convert("RGB")  # alpha (or palette transparency) dropped
                else:
                    rgb = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGB
                arr = np.asarray(rgb, dtype=np.uint8)
                return arr.copy() if not arr.flags.writeable else arr
    except UserError:
        raise
    except UnidentifiedImageError as e:
        raise UserError(f"{path}: not an image Pillow can read; use PNG, JPEG, BMP or TIFF") from e
    except (OSError, SyntaxError, ValueError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"{path}: corrupt or truncated image ({msg}); replace the file") from e
    except Image.DecompressionBombError as e:
        raise UserError(f"{path}: image too large for Pillow's safety limit; resize it first") from e
    if wide.ndim == 2:
        wide = np.repeat(wide[..., None], 3, axis=2)
    wide = np.ascontiguousarray(wide[..., :3])
    if keep_16bit:
        return wide
    return to_8bit(wide)


def _read_colour_16bit(path: Path, fmt: str | None) -> np.ndarray:
    """Full-precision (H, W, 3) uint16 of a 16-bit colour TIFF (tifffile); PNG has no lossless path."""
    if fmt != "TIFF":
        raise UserError(
            f"{path}: 16-bit colour {fmt} cannot be read at full precision; save it as 16-bit TIFF"
        )
    import tifffile

    try:
        a = np.asarray(tifffile.imread(path))
    except Exception as e:  # tifffile raises many types for damaged files
        raise UserError(f"{path}: corrupt or truncated TIFF ({type(e).__name__}); replace the file") from e
    if a.ndim != 3 or a.shape[2] < 3 or a.dtype != np.uint16:
        raise UserError(
            f"{path}: unexpected 16-bit TIFF layout {a.shape} {a.dtype}; save it as 16-bit RGB TIFF"
        )
    return np.ascontiguousarray(a[..., :3])


def to_8bit(a: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by the high byte (v >> 8, as Pillow does for 16-bit colour); uint8 passes through."""
    if a.dtype == np.uint8:
        return a
    if a.dtype != np.uint16:
        raise ValueError(f"to_8bit expects uint8 or uint16, got {a.dtype}")
    return (a >> 8).astype(np.uint8)


def list_images(folder: str | Path) -> list[Path]:
    """Image files in `folder` (not recursive), sorted by name; hidden files ignored."""
    folder = Path(folder)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def write_image(path: str | Path, arr: np.ndarray) -> Path:
    """Write (H, W, 3) or (H, W) uint8 (or uint16 for PNG/TIFF) atomically; format from the suffix."""
    from PIL import Image

    path = Path(path)
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"write_image: expected (H, W, 3) or (H, W), got {a.shape}")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise UserError(f"{path}: unknown image format '{suffix}'; use one of {', '.join(IMAGE_SUFFIXES)}")
    if a.dtype == np.uint16:
        if a.ndim == 3 or suffix not in (".png", ".tif", ".tiff"):
            a = to_8bit(a)  # Pillow writes 16-bit only for single-channel PNG/TIFF
        else:
            a = a.astype(np.uint16)
    elif a.dtype != np.uint8:
        raise ValueError(f"write_image: expected uint8 or uint16, got {a.dtype}")
    img = Image.fromarray(np.ascontiguousarray(a))
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}[
        suffix
    ]
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path
