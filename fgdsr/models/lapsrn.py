"""LapSRN (Lai, Huang, Ahuja, Yang, CVPR 2017): a Laplacian pyramid of x2 levels, Y channel in and out.

Per level l (coarse to fine): `depth` 3x3 convs + LeakyReLU(0.2) on the features, a stride-2 transposed conv
+ LeakyReLU that doubles them, a 3x3 conv to one channel (the level's residual), and an image branch that
doubles the previous image with a 4x4 stride-2 transposed conv (bilinear init, no bias); the level's image is
the upsampled image + the residual. Every level's image is supervised.

Two layouts:
- `official`: the authors' MatConvNet model (phoenix104104/LapSRN, LapSRN_x{2,4,8}.mat): feature up-conv
  3x3, upsample 2, crop [top 0, bottom 1, left 0, right 1], with bias; every conv with bias; image branch
  4x4, crop 1, no bias. x4: 814,242 params, 812,768 of them kernel weights.
- `port`: the common PyTorch port (twtygqyy/pytorch-LapSRN): feature up-conv 4x4, stride 2, padding 1, and no
  bias anywhere. x4: 870,112 params (all weights).

x3 has no pyramid level: as the official test code (SR_LapSRN.m: "resize if size does not match the output
image"), the x4 pyramid runs on the x3 LR input and its x4 output is resized to x3 with MATLAB bicubic. The
authors chose x4-then-down over x2-then-up because downscaling a sharper image loses less than upscaling by
bicubic (x2 -> x3 would leave a third of the magnification to plain bicubic).
"""

from __future__ import annotations

import torch
from torch import nn

from fgdsr.models.init import apply_weight_norm_, init_lapsrn_

LAYOUTS = ("official", "port")


class CroppedConvTranspose2d(nn.ConvTranspose2d):
    """Transposed conv with MatConvNet's output crop `(top, bottom, left, right)` (vl_nnconvt 'crop').

    MatConvNet: out = upsample·(in − 1) + k − top − bottom. The symmetric part of the crop is torch's
    `padding`; an asymmetric remainder (LapSRN's 3x3 up-conv crops [0, 1, 0, 1]) is sliced off, so that
    (N, C, h, w) -> (N, C', 2h, 2w) at odd and even h, w alike, with the same alignment as the official model.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        crop: tuple[int, int, int, int],
        bias: bool = True,
    ) -> None:
        top, bottom, left, right = crop
        pad_h, pad_w = min(top, bottom), min(left, right)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=(pad_h, pad_w), bias=bias)
        self.crop = tuple(int(c) for c in crop)
        # What remains after the symmetric padding: plain Python ints, so the slice exports with dynamic H/W.
        self._rest = (top - pad_h, bottom - pad_h, left - pad_w, right - pad_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        top, bottom, left, right = self._rest
        if top or bottom or left or right:
            y = y[..., top : (-bottom or None), left : (-right or None)]
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", crop={self.crop}"


def feature_upconv(channels: int, layout: str) -> CroppedConvTranspose2d:
    """The feature branch's x2 transposed conv of a layout."""
    if layout == "official":
        return CroppedConvTranspose2d(channels, channels, 3, 2, crop=(0, 1, 0, 1), bias=True)
    return CroppedConvTranspose2d(channels, channels, 4, 2, crop=(1, 1, 1, 1), bias=False)


class LapSRNLevel(nn.Module):
    """One pyramid level: features (N,C,h,w) -> upsampled features (N,C,2h,2w) and a residual (N,1,2h,2w)."""

    def __init__(self, channels: int, depth: int, layout: str) -> None:
        super().__init__()
        bias = layout == "official"
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=bias), nn.LeakyReLU(0.2)]
        self.convs = nn.Sequential(*layers)
        self.upconv = feature_upconv(channels, layout)
        self.uprelu = nn.LeakyReLU(0.2)
        self.residual = nn.Conv2d(channels, 1, 3, padding=1, bias=bias)
        # Image branch: 4x4 stride 2 with crop 1 doubles exactly (same as torch padding 1), no bias.
        self.img_up = CroppedConvTranspose2d(1, 1, 4, 2, crop=(1, 1, 1, 1), bias=False)

    def forward(self, feat: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feat (N,C,h,w), img (N,1,h,w) -> (image (N,1,2h,2w), upsampled features (N,C,2h,2w))."""
        up = self.uprelu(self.upconv(self.convs(feat)))
        return self.img_up(img) + self.residual(up), up


class LapSRN(nn.Module):
    """LapSRN on the Y channel: (N, 1, h, w) in [0, 1] -> (N, 1, h·scale, w·scale).

    Args:
        scale: 2, 4, 8 (log2(scale) levels) or 3 (the x4 pyramid, then bicubic down to x3).
        depth: convs per level; None = 10 for x2/x3/x4, 5 for x8 (the authors' models).
        channels: feature channels (64 in the paper).
        layout: "official" (the authors' MatConvNet model) or "port" (the common PyTorch port).
        weight_norm: weight normalisation on every conv and transposed conv (the FGD paper's setting).
    """

    def __init__(
        self,
        scale: int = 4,
        depth: int | None = None,
        channels: int = 64,
        layout: str = "official",
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        if scale not in (2, 3, 4, 8):
            raise ValueError(f"LapSRN scale must be 2, 3, 4 or 8, got {scale}")
        if layout not in LAYOUTS:
            raise ValueError(f"LapSRN layout must be one of {LAYOUTS}, got {layout!r}")
        self.scale = scale
        self.num_levels = {2: 1, 3: 2, 4: 2, 8: 3}[scale]
        self.depth = depth if depth is not None else (5 if scale == 8 else 10)
        self.channels = channels
        self.feature_channels = channels  # channels of `features[l]` from forward_pyramid (for the FGD heads)
        self.layout = layout
        self.weight_norm = weight_norm
        bias = layout == "official"
        self.input_conv = nn.Conv2d(1, channels, 3, padding=1, bias=bias)
        self.input_relu = nn.LeakyReLU(0.2)
        self.levels = nn.ModuleList(LapSRNLevel(channels, self.depth, layout) for _ in range(self.num_levels))
        init_lapsrn_(self)
        if weight_norm:
            apply_weight_norm_(self)

    def forward_pyramid(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """x (N,1,h,w) in [0,1] -> (images, features), coarse to fine.

        images[l]: (N,1,h·2^(l+1),w·2^(l+1)); features[l]: (N,C,same) = the level's upsampled features (the
        input of its residual conv). For scale 3 this is the x4 pyramid.
        """
        feat = self.input_relu(self.input_conv(x))
        img = x
        images, features = [], []
        for level in self.levels:
            img, feat = level(feat, img)
            images.append(img)
            features.append(feat)
        return images, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,1,h,w) -> (N,1,h·s,w·s); scale 3: the x4 output resized by MATLAB bicubic to (3h, 3w)."""
        images, _ = self.forward_pyramid(x)
        return self.finalize(images[-1], x)

    def finalize(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The finest pyramid image `y` -> the output at `self.scale` for LR input `x` (x3: bicubic x4 -> x3).

        Exposed so that heads working on the finest level (FGD) can apply the same last step.
        """
        if self.scale != 3:
            return y
        from fgdsr.data.imresize import imresize

        h, w = x.shape[-2:]
        return imresize(y, size=(3 * h, 3 * w))

    def extra_repr(self) -> str:
        return f"scale={self.scale}, depth={self.depth}, channels={self.channels}, layout={self.layout!r}"
