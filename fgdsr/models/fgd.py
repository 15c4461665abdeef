"""The FGD heads around an SR trunk: K-bin anchor classifier, anchor-area output, Class-Module; `SRModel`.

Paper: Sec. 2 of the FGD loss paper (Eq. 1-6, Fig. 3-4); the mapping equation -> code is in docs/LOSS.md.

Shapes: LR input `x` (N, 1, h, w) in [0, 1]; a pyramid level l has images (N, 1, h*2^(l+1), w*2^(l+1)) and
features (N, C, same). K = `cfg.bins`, M = len(`cfg.areas`) anchor-area classes.

The pieces, each a config value (docs/LOSS.md says what each reading of the paper means and what it measured):
- `BinGrid`: the K bins of Eq. 1-2 over [0, 1] (`bin_range: full`) or over Y's studio swing [16, 235]/255.
- The head (`fgd_head`, a plain dict HEADS from the name to a class): logits = conv(F) + a prior term that
  centres the classifier on the regression image I, so that at init (or from a trained baseline) the chosen bin
  is I's own and the FGD model starts at the baseline's output. `prior`: a Laplace prior -tau*|pos(I) - c_k|;
  `input`: the classifier sees I itself (a learned linear term in pos(I), initialised to a Gaussian prior);
  `window`: the prior head over the 2w+1 bins around bin(I) only (cheaper at inference); `literal`: no prior,
  S = A + h*tanh(offset head) (the paper read word for word; measured to fail).
- The labels (`bin_labels`): `onehot` (Eq. 3's CE), `twohot` (soft labels on the two bins around the GT value,
  decoded by the expected anchor: sub-bin precision), `ordinal` (DORN: K-1 "z >= t_k" outputs, decoded by counting).
- The output S = A + h*tanh((I - A)/h): I projected smoothly into the anchor area [A - h, A + h] (Fig. 3).
- Training decode (`train_decode`): `hard` (the argmax anchor, detached: L_r never reaches the classifier),
  `soft` (the expectation over the class probabilities q of the in-area projection, so L_r trains the head),
  `st` (hard forward, soft gradient). Inference is always hard (argmax / count), one cheap pass.
- FD: the Class-Module picks the area per LR sub-image; training mixes the M areas' outputs with its soft
  probabilities (ClassSR), inference takes the argmax area.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgdsr.errors import UserError

FGD_HEADS = ("prior", "input", "window", "literal")
BIN_LABELS = ("onehot", "twohot", "ordinal")
TRAIN_DECODES = ("hard", "soft", "st")
# bin_range: the span the K bins divide (grey units / 255). Y of BT.601 (MATLAB rgb2ycbcr) lies in [16, 235].
BIN_RANGES = {"full": (0.0, 1.0), "studio": (16.0 / 255.0, 235.0 / 255.0)}
INPUT_PRIOR_TAU = 0.1  # fgd_head "input": initial Gaussian prior sharpness, exp(-0.1*d^2/2): sigma ~ 3 bins


@dataclass(frozen=True)
class BinGrid:
    """K bins of equal width over [low, high] (Eq. 1-2 divided by 2^n): t_i = low + i*width, A_i = t_i + width/2.

    Positions are in bin units: pos(y) = (y - low)/width, so bin k covers pos in [k, k+1) and its centre is k + 0.5.
    """

    count: int
    low: float = 0.0
    high: float = 1.0

    @classmethod
    def from_config(cls, cfg) -> BinGrid:
        low, high = BIN_RANGES[cfg.bin_range]
        return cls(int(cfg.bins), low, high)

    @property
    def width(self) -> float:
        return (self.high - self.low) / self.count

    def position(self, y: Tensor) -> Tensor:
        """Continuous bin coordinate of y (any shape), float32; bin k covers [k, k+1)."""
        return (y.float() - self.low) * (1.0 / self.width)

    def index_float(self, y: Tensor) -> Tensor:
        """The bin of each value as float32: floor(pos(y)) clamped to [0, K-1] (y = high -> K-1; Eq. 1-2)."""
        return self.position(y.detach()).clamp(0.0, float(self.count)).floor().clamp(max=self.count - 1)

    def index(self, y: Tensor) -> Tensor:
        """GT bin of each pixel (Eq. 1-2): t_i <= z < t_{i+1} -> i, as int64 in [0, K-1] (z clamped to the range)."""
        return self.index_float(y).long()

    def anchor(self, k: Tensor) -> Tensor:
        """Anchor A_k = (t_k + t_{k+1})/2 = low + (k + 0.5)*width (Eq. 2), float32; k may be fractional."""
        return k.float() * self.width + (self.low + 0.5 * self.width)

    def halfwidth(self, area: int) -> float:
        """Half-width h of an anchor area of `area` bins around the chosen bin (Fig. 3): (area/2)*width."""
        return area / 2 * self.width


def window_halfwidth(cfg) -> int:
    """w of fgd_head "window" (2w+1 candidate bins around bin(I)): (a_max + 1)/2 for the widest anchor area a_max.

    a_max = max(cfg.areas) for fd (7 -> w = 4, 9 channels), cfg.static_area for cs/aux (5 -> w = 3, 7 channels).
    Why one bin more than the widest area's half-width (a_max - 1)/2: an anchor at d <= (a_max - 1)/2 bins keeps
    I's own bin inside its area, so the projection barely moves S; the outermost window bins are the moves that
    exclude I's bin even for the widest area, i.e. that can change the output (docs/LOSS.md). Capped at K - 1.
    """
    widest = max(cfg.areas) if cfg.loss == "fd" else cfg.static_area
    return int(min((widest + 1) // 2, cfg.bins - 1))


@dataclass
class ModelOutput:
    """What `SRModel.forward_train` gives the loss; lists are indexed by pyramid level (coarse to fine).

    images: regression images I_l (N, 1, H_l, W_l) of the trunk.
    outputs: supervised outputs S_l (N, 1, H_l, W_l): the anchor-area output at head levels, I_l elsewhere.
    logits: head logits at head levels, None elsewhere: (N, K, H_l, W_l) (onehot / twohot), (N, K-1, ...)
        (ordinal), (N, 2w+1, ...) (window: channel j = the bin centers[l] + j - w, clamped when chosen).
    anchors: the hard (inference) anchor A_l (N, 1, H_l, W_l), detached, at head levels (bin accuracy).
    centers: fgd_head "window" only: the window centre k0 = bin(I_l) per pixel, (N, 1, H_l, W_l) int64.
    class_logits, class_probs: FD only, (N, M, ceil(h/P), ceil(w/P)) per LR sub-image of P = cfg.class_patch.
    """

    images: list[Tensor]
    outputs: list[Tensor]
    logits: list[Tensor | None]
    anchors: list[Tensor | None] | None = None  # required where logits are given (the loss's bin accuracy)
    class_logits: Tensor | None = None
    class_probs: Tensor | None = None
    centers: list[Tensor | None] | None = None


def area_offset(y: Tensor, anchor: Tensor, half: Tensor | float, extra: Tensor | None = None) -> Tensor:
    """S = A + h*tanh((y - A)/h [+ extra]): y projected smoothly into [A - h, A + h] (Fig. 3).

    y, anchor: broadcastable (N, C, H, W) tensors; half: a float or a tensor broadcastable to them (half-widths in
    grey levels / 255). The slope is 1 at y = A, so a regression inside its own bin passes almost unchanged.
    """
    z = (y - anchor) / half
    if extra is not None:
        z = z + extra
    return anchor + half * torch.tanh(z)


def nearest_up(t: Tensor, factor: int, height: int, width: int) -> Tensor:
    """Repeat each value of t (N, C, th, tw) into a factor x factor block, cropped to (N, C, height, width).

    Row/column index maps (i // factor) + index_select: exact, and free of the slice/reshape guards that stop
    torch.export from keeping H and W symbolic (requires th*factor >= height, tw*factor >= width).
    """
    rows = torch.arange(height, device=t.device) // factor
    cols = torch.arange(width, device=t.device) // factor
    return t.index_select(2, rows).index_select(3, cols)


def channel_argmax(logits: Tensor) -> Tensor:
    """argmax over dim 1, keepdim: (N, C, H, W) -> (N, 1, H, W) int64, the first maximum on ties (as argmax).

    `max(dim).indices` rather than `argmax`: same result, but torch's CPU argmax over the channel dim of an NCHW
    tensor is a slow strided reduction (720p, 9 channels: 118 vs 32 ms; 32 channels: 173 vs 117 ms, 2 threads).
    """
    return logits.max(dim=1, keepdim=True).indices


def window_to_bin(j: Tensor, k0: Tensor, window: int, bins: int) -> Tensor:
    """Absolute bin of window channel j: clamp(k0 + j - w, 0, K-1); j, k0 (N, 1, H, W) float32 -> float32."""
    return (k0 + j - window).clamp(0, bins - 1)


class ClassModule(nn.Module):
    """ClassSR's Classifier (Fig. 4) applied to every P x P LR sub-image, fully convolutionally.

    conv 4x4 stride 4 1->128, LeakyReLU 0.1, three 1x1 128->128 (+LeakyReLU), 1x1 128->32, average over the
    sub-image (= ClassSR's global pool), FC 32->M as a 1x1 conv. Input (N, 1, h, w) LR Y in [0, 1];
    output logits (N, M, ceil(h/P), ceil(w/P)). Partial sub-images at the bottom/right edge are filled by
    replicate padding (ClassSR crops full sub-images only; training tiles are always whole: config.check_whole_class_tiles, called by FGDLoss).
    """

    def __init__(self, classes: int = 3, patch: int = 32, width: int = 128, hidden: int = 32) -> None:
        super().__init__()
        if patch % 4:
            raise UserError(f"config field 'class_patch': {patch} is not a multiple of 4; use 32 (ClassSR)")
        self.patch = patch
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 4, 4),
            nn.LeakyReLU(0.1),
            nn.Conv2d(width, width, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(width, width, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(width, width, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(width, hidden, 1),
        )
        self.fc = nn.Conv2d(hidden, classes, 1)
        # ClassSR's init: the conv body Kaiming (fan_in) x 0.1 with zero biases; the FC keeps nn.Linear's default
        # init (a 1x1 conv's default is the same formula). Scaling the FC too (as before) left the class logits
        # within ~1e-6 of each other at init instead of ~0.2 (docs/LOSS.md).
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                m.weight.data.mul_(0.1)
                nn.init.zeros_(m.bias)

    def forward_padded(self, x: Tensor) -> Tensor:
        """(N, 1, h, w) -> (N, M, ceil(h/P) + 1, ceil(w/P) + 1); the last row/column is padding only.

        The input is replicate-padded by 2P - 1: floor-mode conv/pooling then give ceil(h/P) real sub-images
        (each over the same LR pixels as padding up to a multiple of P) plus one spare. Why not pad to a
        multiple of P: the modulo on symbolic sizes breaks torch.export's shape solver, and a tile map that may
        have size 1 makes export specialise on "size != 1"; with the spare row/column it is always >= 2.
        """
        p = self.patch
        x = F.pad(x, (0, 2 * p - 1, 0, 2 * p - 1), mode="replicate")
        return self.fc(F.avg_pool2d(self.body(x), p // 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_padded(x)[:, :, :-1, :-1]


# ------------------------------------------------------------------------------------------------ heads


class AnchorHead(nn.Module):
    """Per-pixel bin classifier for one pyramid level: logits = conv(F) + prior_term(I); see the subclasses.

    F (N, C, H, W), I (N, 1, H, W) (detached inside) -> logits (N, C_out, H, W). `labels` (onehot | twohot |
    ordinal) sets C_out (K, K, K-1) and the decoding. Subclasses define `prior_term` (None: no prior) and, for
    heads whose channels are not the K absolute bins, `channel_bins`.
    """

    uses_regression = True  # S = A + h*tanh((I - A)/h); False (literal): S = A + h*tanh(offset head)

    def __init__(self, channels: int, grid: BinGrid, kernel: int, labels: str, window: int = 0) -> None:
        super().__init__()
        self.grid, self.labels, self.window = grid, labels, window
        self.bins = grid.count
        self.cls = nn.Conv2d(channels, self.outputs(), kernel, padding=kernel // 2)
        self.offset: nn.Conv2d | None = None
        # zero-init: at start the prior alone decides, i.e. the chosen bin = the bin of the regression I
        nn.init.zeros_(self.cls.weight)
        nn.init.zeros_(self.cls.bias)
        centres = torch.arange(self.bins).float() + 0.5
        self.register_buffer("centres", centres.view(1, -1, 1, 1), False)  # c_k = k + 0.5 (bin units)
        self.register_buffer("thresholds", torch.arange(1, self.bins).float().view(1, -1, 1, 1), False)

    def outputs(self) -> int:
        return self.bins - 1 if self.labels == "ordinal" else self.bins

    def prior_term(self, image: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(term broadcastable to the logits, window centres k0 or None); logits = conv(F) + term."""
        return None, None

    def channel_bins(self, centers: Tensor | None) -> Tensor:
        """The absolute bin (float) of each logit channel: (1, K, 1, 1) for the K-bin heads."""
        return self.centres - 0.5

    def forward(self, feat: Tensor, image: Tensor) -> tuple[Tensor, Tensor | None]:
        """Training logits (N, C_out, H, W) float32 and the window centres k0 (N, 1, H, W) float32 or None."""
        term, k0 = self.prior_term(image)
        logits = self.cls(feat).float()
        return (logits if term is None else logits + term), k0

    # ------------------------------------------------------------------------------------------- decoding
    def hard_anchor(self, logits: Tensor, k0: Tensor | None) -> Tensor:
        """The inference anchor (N, 1, H, W) float32: argmax bin (onehot), expected anchor (twohot), count (ordinal)."""
        if self.labels == "ordinal":
            return self.grid.anchor((logits >= 0).float().sum(dim=1, keepdim=True))
        if self.labels == "twohot":
            return self.expected_anchor(logits, k0)
        j = channel_argmax(logits).float()
        k = window_to_bin(j, k0, self.window, self.bins) if k0 is not None else j
        return self.grid.anchor(k)

    def expected_anchor(self, logits: Tensor, k0: Tensor | None) -> Tensor:
        """sum_k q_k A_k with q = softmax(logits): (N, 1, H, W)."""
        q = logits.softmax(dim=1)
        return (q * self.grid.anchor(self.candidate_bins(k0))).sum(dim=1, keepdim=True)

    def candidate_bins(self, k0: Tensor | None) -> Tensor:
        """Absolute bin of every channel, clamped to [0, K-1]: (1, C, 1, 1) or (N, C, H, W) for the window."""
        bins = self.channel_bins(k0)
        return bins.clamp(0, self.bins - 1) if k0 is not None else bins

    def soft_output(self, logits: Tensor, k0: Tensor | None, y: Tensor, half, extra: Tensor | None) -> Tensor:
        """The training output whose gradient reaches the classifier (train_decode soft), (N, 1, H, W).

        onehot: sum_k q_k * (A_k + h*tanh((y - A_k)/h)), the expectation over q of the in-area projection (K
        channels); one-hot q gives exactly the hard output. twohot: the projection around the expected anchor
        (its hard decode too). ordinal: around the expected count sum_k sigmoid(o_k) (one-hot-like sigmoids give
        exactly the hard count). `y` is I, or for the literal head the anchor itself (S = A + h*tanh(extra)).
        """
        if self.labels == "onehot":
            anchors = self.grid.anchor(self.candidate_bins(k0))
            base = anchors if not self.uses_regression else y
            return (logits.softmax(dim=1) * area_offset(base, anchors, half, extra)).sum(dim=1, keepdim=True)
        if self.labels == "ordinal":
            anchor = self.grid.anchor(torch.sigmoid(logits).sum(dim=1, keepdim=True))
        else:
            anchor = self.expected_anchor(logits, k0)
        return area_offset(y if self.uses_regression else anchor, anchor, half, extra)

    # ------------------------------------------------------------------------------------------ inference
    def infer(self, feat: Tensor, image: Tensor) -> Tensor:
        """Inference anchor (N, 1, H, W) float32 (the hard decode of `forward`'s logits).

        Eager, for a 1x1 head on float32 features: the 1x1 conv written as the GEMM it is, W (C_out, C) @ F
        (C, H*W), with the prior term and the bias in the accumulator (`baddbmm_`), so the full-resolution
        C_out-channel map is written once and read once by the argmax instead of passing through element-wise
        kernels (2-core CPU, 720p: 144 ms instead of 419 ms as conv + prior; benchmarks/bench_head.py). Traced
        (torch.compile, torch.export for ONNX Runtime / TensorRT), for a 3x3 head or fp16 features: conv + term as
        in `forward`; the compiler fuses term and argmax and picks the conv's memory layout, which measured faster
        there than any GEMM form (docs/BENCHMARKS.md). Channel-major (C_out, H*W) because a pixel-major GEMM with
        9 output columns (window) hit a slow BLAS path (269 vs 57 ms). Same logits, up to summation order.
        """
        if self.cls.kernel_size != (1, 1) or feat.dtype != torch.float32 or torch.compiler.is_compiling():
            logits, k0 = self.forward(feat, image)
            return self.hard_anchor(logits, k0)
        n, ch, h, w = feat.shape
        acc, beta, k0 = self.eager_accumulator(image.detach().reshape(n, 1, h * w))
        weight = self.cls.weight.view(1, -1, ch).expand(n, -1, -1)  # (N, C_out, C), a view
        logits = acc.baddbmm_(weight, feat.flatten(2), beta=beta)  # in place: inference carries no gradient
        return self.hard_anchor(logits.view(n, -1, h, w), k0.view(n, 1, h, w) if k0 is not None else None)

    def eager_accumulator(self, image: Tensor) -> tuple[Tensor, float, Tensor | None]:
        """(acc (N, C_out, H*W), beta, k0 or None) with logits = beta*acc + W F: the bias and prior term, written
        with as few full-resolution passes as the form allows (subclasses). image: (N, 1, H*W)."""
        n, _, hw = image.shape
        term, k0 = self.prior_term(image.unsqueeze(-1))
        bias = self.cls.bias.view(1, -1, 1)
        acc = bias.expand(n, -1, hw).clone() if term is None else term.squeeze(-1) + bias
        return acc, 1.0, k0


class PriorHead(AnchorHead):
    """fgd_head "prior": logits_k = conv(F)_k - tau*|pos(I) - c_k| (a Laplace prior around the regression).

    ordinal: logits_k = conv(F)_k + tau*(pos(I) - k), k = 1..K-1 (a ramp: > 0 where I is above threshold t_k).
    tau = exp(log_tau), learned, starts at 1. I detached: L_c1 must not pull I towards bin centres.
    """

    def __init__(self, channels: int, grid: BinGrid, kernel: int, labels: str, window: int = 0) -> None:
        super().__init__(channels, grid, kernel, labels, window)
        self.log_tau = nn.Parameter(torch.zeros(()))

    def prior_term(self, image: Tensor) -> tuple[Tensor | None, Tensor | None]:
        tau = self.log_tau.exp()
        u = self.grid.position(image.detach())
        if self.labels == "ordinal":
            return tau * (u - self.thresholds), None
        return -(tau * u - tau * self.centres).abs(), None  # |tau*u - tau*c|: two K-channel passes, not four

    def eager_accumulator(self, image: Tensor) -> tuple[Tensor, float, Tensor | None]:
        tau = self.log_tau.exp()
        u = tau * self.grid.position(image)  # (N, 1, H*W)
        bias = self.cls.bias.view(1, -1, 1)
        if self.labels == "ordinal":  # tau*(u - k) + b
            return (u - tau * self.thresholds.view(1, -1, 1)).add_(bias), 1.0, None
        # |u - c| - b in one buffer, then beta = -1: W F + b - |u - c| (three passes over the K-channel map)
        return (u - tau * self.centres.view(1, -1, 1)).abs_().sub_(bias), -1.0, None


class InputHead(AnchorHead):
    """fgd_head "input": the classifier sees I itself: logits = conv([F, pos(I)]) (I detached).

    Written as conv(F) + w (x) pos(I) (the conv over the concatenation without copying F). Initialised to a
    Gaussian prior around the regression: w_k = tau0*c_k, b_k = -tau0*c_k^2/2, i.e. logits_k =
    -tau0*(pos(I) - c_k)^2/2 + (a term equal for all k), so the argmax starts at bin(I); ordinal: w_k = tau0,
    b_k = -tau0*k. Unlike `prior`, the shape of the prior is learned (it is just one more input channel).
    """

    def __init__(self, channels: int, grid: BinGrid, kernel: int, labels: str, window: int = 0) -> None:
        super().__init__(channels, grid, kernel, labels, window)
        t = INPUT_PRIOR_TAU
        if labels == "ordinal":
            w, b = torch.full((self.outputs(),), t), -t * self.thresholds.flatten()
        else:
            c = self.centres.flatten()
            w, b = t * c, -t * c**2 / 2
        self.image_weight = nn.Parameter(w.view(1, -1, 1, 1).clone())
        with torch.no_grad():
            self.cls.bias.copy_(b)

    def prior_term(self, image: Tensor) -> tuple[Tensor | None, Tensor | None]:
        return self.image_weight * self.grid.position(image.detach()), None

    def eager_accumulator(self, image: Tensor) -> tuple[Tensor, float, Tensor | None]:
        bias = self.cls.bias.view(1, -1, 1)
        return (self.image_weight.view(1, -1, 1) * self.grid.position(image)).add_(bias), 1.0, None


class WindowHead(PriorHead):
    """fgd_head "window": the prior head over the 2w+1 bins k0 + d (d = -w..w) around k0 = bin(I) (onehot only).

    logit_d = conv(F)_d - tau*|pos(I) - (k0 + d + 0.5)| = conv(F)_d - tau*|r - d| with r = pos(I) - k0 - 0.5
    computed on one channel: only the conv and one |.| pass touch 2w+1 channels. Bins k0 + d outside [0, K-1]
    keep their virtual anchor in the prior (so they rank below the edge bin); chosen anyway, they are clamped.
    """

    def __init__(self, channels: int, grid: BinGrid, kernel: int, labels: str, window: int = 0) -> None:
        super().__init__(channels, grid, kernel, labels, window)
        self.register_buffer("deltas", torch.arange(-window, window + 1).float().view(1, -1, 1, 1), False)

    def outputs(self) -> int:
        return 2 * self.window + 1

    def prior_term(self, image: Tensor) -> tuple[Tensor | None, Tensor | None]:
        tau = self.log_tau.exp()
        img = image.detach()
        k0 = self.grid.index_float(img)
        r = self.grid.position(img) - k0 - 0.5
        return -(tau * r - tau * self.deltas).abs(), k0

    def eager_accumulator(self, image: Tensor) -> tuple[Tensor, float, Tensor | None]:
        tau = self.log_tau.exp()
        k0 = self.grid.index_float(image)
        r = self.grid.position(image) - k0 - 0.5  # one channel
        bias = self.cls.bias.view(1, -1, 1)
        return (tau * r - tau * self.deltas.view(1, -1, 1)).abs_().sub_(bias), -1.0, k0

    def channel_bins(self, centers: Tensor | None) -> Tensor:
        return centers + self.deltas  # (N, 2w+1, H, W): k0 + d, unclamped (candidate_bins clamps)


class LiteralHead(AnchorHead):
    """fgd_head "literal": logits = conv(F) (default init, no prior); S = A + h*tanh(offset(F)): the paper's
    "anchor + bounded offset" with the regression image unused at the head level (measured to fail: RESULTS.md)."""

    uses_regression = False

    def __init__(self, channels: int, grid: BinGrid, kernel: int, labels: str, window: int = 0) -> None:
        super().__init__(channels, grid, kernel, labels, window)
        self.cls.reset_parameters()
        self.offset = nn.Conv2d(channels, 1, kernel, padding=kernel // 2)


HEADS: dict[str, type[AnchorHead]] = {
    "prior": PriorHead,
    "input": InputHead,
    "window": WindowHead,
    "literal": LiteralHead,
}


# ------------------------------------------------------------------------------------------------ model


class SRModel(nn.Module):
    """An SR trunk (LapSRN, SRCNN, VDSR) with the heads `cfg.loss` needs.

    forward(x): the inference graph, (N, 1, h, w) -> (N, 1, h*s, w*s) in [0, 1]-ish (not clamped), hard decode;
    what ONNX exports. l1/aux: exactly the trunk's forward (aux heads are never evaluated here).
    forward_train(x, targets=None) -> ModelOutput for the loss; `targets` (per-level HR, coarse to fine) is only
    read with cfg.anchor_source = "gt" (teacher forcing: the area is centred on the GT bin).
    """

    def __init__(self, trunk: nn.Module, cfg) -> None:
        super().__init__()
        self.trunk = trunk
        self.cfg = cfg
        self.variant = cfg.loss
        self.bins = cfg.bins
        self.grid = BinGrid.from_config(cfg)
        self.fgd_head = cfg.fgd_head
        if self.fgd_head not in HEADS:
            raise UserError(f"config field 'fgd_head': unknown '{self.fgd_head}' ({', '.join(HEADS)})")
        if self.variant != "l1" and cfg.model != "lapsrn":
            raise UserError(
                f"config field 'loss': '{self.variant}' needs model: lapsrn; {cfg.model} trains with loss: l1 only"
            )
        self.levels = int(getattr(trunk, "num_levels", 1))
        if self.variant == "l1":
            self.head_levels: list[int] = []
        else:
            last = self.levels - 1
            self.head_levels = list(range(self.levels)) if cfg.head_levels == "all" else [last]
        channels = int(getattr(trunk, "feature_channels", cfg.channels))
        self.window = window_halfwidth(cfg) if self.fgd_head == "window" else 0
        head_cls = HEADS[self.fgd_head]
        self.heads = nn.ModuleDict(
            {
                str(lv): head_cls(channels, self.grid, cfg.head_kernel, cfg.bin_labels, self.window)
                for lv in self.head_levels
            }
        )
        self.class_module = ClassModule(len(cfg.areas), cfg.class_patch) if self.variant == "fd" else None
        areas = cfg.areas if self.variant == "fd" else [cfg.static_area]
        self.register_buffer("halfwidths", torch.tensor([self.grid.halfwidth(a) for a in areas]), False)

    # ----------------------------------------------------------------------------------------------- helpers
    def _pyramid(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        images, feats = self.trunk.forward_pyramid(x)
        return list(images), list(feats)

    def optim_groups(self) -> list[dict]:
        """Adam parameter groups: {"name", "params", "lr_scale"[, "eps"]}; train.py sets lr = lr_at(step) * lr_scale.

        The Class-Module is its own group with Adam's eps = cfg.class_eps (tiny): its gradients reach it only
        through beta, gamma (~1e-3) and the small area differences of L_r, i.e. they are 1e-10..1e-9, below
        Adam's default eps (1e-8), which then shrank its steps to a few percent of the trunk's. Adam's step is
        invariant to the gradient's scale except through eps, so a negligible eps makes the module's learning
        independent of the absolute scale of its loss weights (docs/LOSS.md, "Eq. 4 and Fig. 4").
        """
        cm = [p for p in self.class_module.parameters() if p.requires_grad] if self.class_module else []
        own = {id(p) for p in cm}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
        groups = [{"name": "trunk", "params": rest, "lr_scale": 1.0}]
        if cm:
            groups.append(
                {
                    "name": "class_module",
                    "params": cm,
                    "lr_scale": self.cfg.class_lr_scale,
                    "eps": self.cfg.class_eps,
                }
            )
        return groups

    def load_baseline(self, state: dict[str, Tensor]) -> None:
        """Load a baseline trunk state (keys with or without a `trunk.` prefix); heads keep their init."""
        prefix = "trunk."
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        self.trunk.load_state_dict(state)

    def _area_weights(
        self, x: Tensor, probs: Tensor | None, lv: int, like: Tensor
    ) -> list[tuple[Tensor | None, Tensor]]:
        """[(weight (N, 1, H, W) or None, half-width)] per area: FD: the class probabilities upsampled to the pixels
        of level lv; CS: the static area with weight None (= 1)."""
        if probs is None:
            return [(None, self.halfwidths[0])]
        p = nearest_up(probs, self.cfg.class_patch * 2 ** (lv + 1), like.shape[-2], like.shape[-1])
        return [(p[:, m : m + 1], self.halfwidths[m]) for m in range(p.shape[1])]

    # --------------------------------------------------------------------------------------------- inference
    def forward(self, x: Tensor) -> Tensor:
        if self.variant in ("l1", "aux"):
            return self.trunk(x)  # aux: identical graph to the baseline's, the head is training-only
        images, feats = self._pyramid(x)
        lv = self.levels - 1
        image = images[lv]
        head = self.heads[str(lv)]
        anchor = head.infer(feats[lv], image)  # hard decode (argmax / count), no softmax for onehot heads
        off = head.offset(feats[lv]).float() if head.offset is not None else None
        if self.class_module is not None:
            cls = self.class_module.forward_padded(x).argmax(dim=1, keepdim=True)  # one area per sub-image
            half = self.halfwidths[cls]  # a table lookup (ONNX Gather); no expand, so no size-1 shape guard
            half = nearest_up(half, self.cfg.class_patch * 2 ** (lv + 1), image.shape[-2], image.shape[-1])
        else:
            half = self.halfwidths[0]
        y = image.float() if head.uses_regression else anchor
        return self.trunk.finalize(area_offset(y, anchor, half, off), x)

    # ---------------------------------------------------------------------------------------------- training
    def forward_train(self, x: Tensor, targets: list[Tensor] | None = None) -> ModelOutput:
        images, feats = self._pyramid(x)
        outputs: list[Tensor] = list(images)
        logits_all: list[Tensor | None] = [None] * len(images)
        anchors: list[Tensor | None] = [None] * len(images)
        centers: list[Tensor | None] = [None] * len(images)
        class_logits = class_probs = None
        if self.class_module is not None:
            class_logits = self.class_module(x).float()
            class_probs = class_logits.softmax(dim=1)
        for lv in self.head_levels:
            image = images[lv]
            head = self.heads[str(lv)]
            feat = (
                feats[lv].detach() if self.cfg.head_detach else feats[lv]
            )  # head_detach: no CE into the trunk
            logits, k0 = head(feat, image)
            logits_all[lv] = logits
            centers[lv] = k0.long() if k0 is not None else None
            anchors[lv] = head.hard_anchor(logits.detach(), k0)
            if self.variant == "aux":
                continue  # auxiliary classification only: the output stays the regression image
            off = head.offset(feat).float() if head.offset is not None else None
            outputs[lv] = self._train_output(head, logits, k0, image.float(), anchors[lv], off, targets, lv,
                                             self._area_weights(x, class_probs, lv, image))  # fmt: skip
        return ModelOutput(images, outputs, logits_all, anchors, class_logits, class_probs,
                           centers if self.window else None)  # fmt: skip

    def _train_output(self, head, logits, k0, y, hard_anchor, off, targets, lv, areas) -> Tensor:
        """S at a head level: sum over areas of weight * output(area), the output decoded per cfg.train_decode."""
        decode = self.cfg.train_decode
        if self.cfg.anchor_source == "gt":
            if targets is None:
                raise ValueError("anchor_source='gt' needs forward_train(x, targets)")
            hard_anchor, decode = self.grid.anchor(self.grid.index(targets[lv])), "hard"
        base = y if head.uses_regression else hard_anchor
        total = None
        for weight, half in areas:
            if decode == "soft":
                s = head.soft_output(logits, k0, y, half, off)
            else:
                s = area_offset(base, hard_anchor, half, off)
                if decode == "st":  # the hard value with the soft output's gradient
                    soft = head.soft_output(logits, k0, y, half, off)
                    s = soft + (s - soft).detach()
            s = s if weight is None else weight * s
            total = s if total is None else total + s
        return total
