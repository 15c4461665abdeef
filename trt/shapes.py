"""Image sizes for deployment: `WxH` strings, the LR input size for an HR output size, TensorRT profiles.

One derivation is shared by `fgdsr build-engine` (profile) and `fgdsr benchmark` (fixed shapes), so the
engine's optimisation profile and the benchmarked shape always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from fgdsr.errors import UserError


@dataclass(frozen=True)
class Size:
    """A width x height in pixels; `lr=True` when the user gave the network's (LR) input size directly."""

    width: int
    height: int
    lr: bool = False

    def __str__(self) -> str:
        return f"{'lr:' if self.lr else ''}{self.width}x{self.height}"


def parse_size(text: str, field: str = "--size") -> Size:
    """`"1280x720"` -> Size(1280, 720) (an HR output size); `"lr:320x180"` -> an LR input size."""
    raw = text.strip().lower()
    lr = raw.startswith("lr:")
    body = raw[3:] if lr else raw
    parts = body.split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        width, height = int(parts[0]), int(parts[1])
    except ValueError:
        raise UserError(f"{field}: '{text}' is not a size; write WIDTHxHEIGHT, e.g. 1280x720") from None
    if width < 1 or height < 1:
        raise UserError(f"{field}: '{text}' must be positive; write WIDTHxHEIGHT, e.g. 1280x720")
    return Size(width, height, lr)


def lr_size(size: Size, scale: int, field: str = "--size") -> tuple[int, int]:
    """The LR input (width, height) of the network for `size`.

    An HR size is divided by the scale and rounded, as `trt.complexity.lr_size` does for the Mult-Adds (so the
    benchmarked shape is the counted one); an `lr:` size is returned as is.
    1280x720 at x4 -> (320, 180); at x3 -> (427, 240).
    """
    if size.lr:
        return size.width, size.height
    if scale < 1:
        raise UserError(f"scale: {scale} must be at least 1")
    w, h = round(size.width / scale), round(size.height / scale)
    if w < 1 or h < 1:
        raise UserError(f"{field}: {size} is smaller than one LR pixel at x{scale}; use a larger size")
    return w, h


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile over the LR input `(N, 1, h, w)`: min/opt/max NCHW shapes."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: dict) -> Profile:
        return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))

    def contains(self, shape: tuple[int, ...]) -> bool:
        """True when the NCHW `shape` lies inside [min, max] on every axis."""
        return len(shape) == 4 and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True)
        )


def make_profile(
    min_size: Size, opt_size: Size, max_size: Size, scale: int, batch: tuple[int, int, int] = (1, 1, 1)
) -> Profile:
    """The LR-input profile for HR (or `lr:`) sizes min <= opt <= max at `scale`; batch = (min, opt, max)."""
    sizes = {}
    for name, size in (("--min", min_size), ("--opt", opt_size), ("--max", max_size)):
        sizes[name] = lr_size(size, scale, name)
    (w0, h0), (w1, h1), (w2, h2) = sizes.values()
    if not (w0 <= w1 <= w2 and h0 <= h1 <= h2):
        raise UserError(
            f"--min/--opt/--max: LR sizes {w0}x{h0}, {w1}x{h1}, {w2}x{h2} at x{scale} are not ordered; "
            "give min <= opt <= max in width and height"
        )
    b0, b1, b2 = batch
    if not (1 <= b0 <= b1 <= b2):
        raise UserError(f"batch: profile batch sizes {batch} must satisfy 1 <= min <= opt <= max")
    return Profile((b0, 1, h0, w0), (b1, 1, h1, w1), (b2, 1, h2, w2))
