"""Image sizes for deployment: `WxH` strings, the LR input size for an HR output size, TensorRT profiles.

One derivation is shared by `fgdsr build-engine` (profile) and `fgdsr benchmark` (fixed shapes), so the
engine's optimisation profile and the benchmarked shape always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from fgdsr.errors import UserError


@dataclass(frozen=True)
class Size:
    """An image size in pixels with named axes: `height`, `width` (torch's (…, H, W) order; build it by keyword).

    `lr=True` when it is the network's (LR) input size rather than an HR output size. Written as `WxH` on the
    command line and by `str()` (1280x720 is 720 rows of 1280 pixels), the video convention users type.
    """

    height: int
    width: int
    lr: bool = False

    def __str__(self) -> str:
        return f"{'lr:' if self.lr else ''}{self.width}x{self.height}"

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width), e.g. for a tensor shape (N, C, *size.hw)."""
        return self.height, self.width


def parse_size(text: str, field: str = "--size") -> Size:
    """`"1280x720"` -> Size(height=720, width=1280) (an HR output size); `"lr:320x180"` -> an LR input size."""
    raw = text.strip().lower().replace("×", "x")
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
    return Size(height=height, width=width, lr=lr)


def lr_size(size: Size, scale: int, field: str = "--size") -> Size:
    """The network's LR input size for `size` (an `lr=True` Size).

    An HR size is divided by the scale and rounded (1280x720 at x4 -> 320x180; at x3 -> 427x240): the benchmarked
    shape, the counted Mult-Adds (trt.complexity) and the engine profile all use this one rounding. An `lr:`
    size is returned as is.
    """
    if size.lr:
        return size
    if scale < 1:
        raise UserError(f"scale: {scale} must be at least 1")
    h, w = round(size.height / scale), round(size.width / scale)
    if w < 1 or h < 1:
        raise UserError(f"{field}: {size} is smaller than one LR pixel at x{scale}; use a larger size")
    return Size(height=h, width=w, lr=True)


def hr_of(size: Size, scale: int) -> Size:
    """The HR output size the network writes for `size`: an HR size as given, an `lr:` size times the scale."""
    if not size.lr:
        return size
    return Size(height=size.height * scale, width=size.width * scale)


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
    lo, mid, hi = (lr_size(s, scale, name) for name, s in (("--min", min_size), ("--opt", opt_size),
                                                             ("--max", max_size)))  # fmt: skip
    (h0, w0), (h1, w1), (h2, w2) = lo.hw, mid.hw, hi.hw
    if not (w0 <= w1 <= w2 and h0 <= h1 <= h2):
        raise UserError(
            f"--min/--opt/--max: LR sizes {w0}x{h0}, {w1}x{h1}, {w2}x{h2} at x{scale} are not ordered; "
            "give min <= opt <= max in width and height"
        )
    b0, b1, b2 = batch
    if not (1 <= b0 <= b1 <= b2):
        raise UserError(f"batch: profile batch sizes {batch} must satisfy 1 <= min <= opt <= max")
    return Profile((b0, 1, h0, w0), (b1, 1, h1, w1), (b2, 1, h2, w2))
