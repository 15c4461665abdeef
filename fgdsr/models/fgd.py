"""The FGD heads around an SR trunk: K-bin anchor classifier, bounded offset, Class-Module; `SRModel`.

Paper: Sec. 2 of the FGD loss paper (Eq. 1-6, Fig. 3-4); the mapping equation -> code is in docs/LOSS.md.

Shapes: LR input `x` (N, 1, h, w) in [0, 1]; a pyramid level l has images (N, 1, h*2^(l+1), w*2^(l+1)) and
features (N, C, same). K = `cfg.bins`, M = len(`cfg.areas`) anchor-area classes.

Design (why it is not a literal transcription; measured in docs/RESULTS.md):
- The regression image I of the trunk stays the backbone of the output: S = A + h*tanh((I - A)/h) projects I
  smoothly into the anchor area [A - h, A + h] around the predicted anchor A. With the right bin, S ~ I.
- The classifier logits get a prior centred on the regression, -tau*|K*(I - A_k)| (I detached), plus a
  learned 1x1 head on the feature F. At init (or from a trained baseline) argmax = the bin of I, so S ~ I and the
  FGD model starts at the baseline's output; the head learns corrections. Without the prior a 1x1 head on
  LapSRN's residual feature F cannot know the absolute grey level (that lives in the image branch), which is one
  reason the literal head trains badly.
- Inference: argmax of the logits (no softmax), anchor = (k + 0.5)/K by arithmetic, the FD area from one class
  per LR sub-image gathered from a table of M half-widths, upsampled nearest: a few cheap ops per pixel.
- fgd_head "window": the same prior head, but over the 2w+1 bins k0 + d (d in -w..w) around the regression's
  own bin k0 = bin(I) instead of all K: per-pixel tensors of 2w+1 channels instead of K (the inference cost is
  the memory traffic of those full-resolution tensors). The bins keep their absolute meaning (Eq. 1-2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgdsr.errors import UserError

# fgd_head (TrainConfig): how logits and the offset are formed (see module docstring and docs/LOSS.md)
FGD_HEADS = ("prior", "prior_offset", "literal", "window")


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
    logits: (N, K, H_l, W_l) bin logits at head levels, None elsewhere; fgd_head "window": (N, 2w+1, H_l, W_l),
        channel j = the bin centers[l] + j - w (clamped to [0, K-1] when chosen).
    centers: fgd_head "window" only: the window centre k0 = bin(I_l) per pixel, (N, 1, H_l, W_l) int64 (None
        elsewhere or for the other heads); the loss maps the GT bin into the window with it.
    class_logits, class_probs: FD only, (N, M, ceil(h/P), ceil(w/P)) per LR sub-image of P = cfg.class_patch.
    """

    images: list[Tensor]
    outputs: list[Tensor]
    logits: list[Tensor | None]
    class_logits: Tensor | None = None
    class_probs: Tensor | None = None
    centers: list[Tensor | None] | None = None


def bin_float(y: Tensor, bins: int) -> Tensor:
    """`bin_index` as float32 (floor(clamp(y, 0, 1)*K), at most K-1): the inference graph stays in float."""
    return (y.detach().float().clamp(0.0, 1.0) * bins).floor().clamp(max=bins - 1)


def bin_index(y: Tensor, bins: int) -> Tensor:
    """GT bin of each pixel (Eq. 1-2): t_i = i/K; t_i <= z < t_{i+1} -> i; z clamped to [0, 1], z = 1 -> K-1.

    y: any shape, float in [0, 1] -> int64 of the same shape in [0, K-1].
    """
    return bin_float(y, bins).long()


def anchor_value(k: Tensor, bins: int) -> Tensor:
    """Anchor A_k = (t_k + t_{k+1})/2 = (k + 0.5)/K (Eq. 2), float32, same shape as k."""
    return (k.float() + 0.5) / bins


def area_offset(y: Tensor, anchor: Tensor, half: Tensor | float, extra: Tensor | None = None) -> Tensor:
    """S = A + h*tanh((y - A)/h [+ extra]): y projected smoothly into [A - h, A + h] (Fig. 3).

    y, anchor: (N, 1, H, W); half: a float or a tensor broadcastable to them (half-widths, in grey levels / 1).
    The slope is 1 at y = A, so a regression inside its own bin passes almost unchanged.
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


class ClassModule(nn.Module):
    """ClassSR's Classifier (Fig. 4) applied to every P x P LR sub-image, fully convolutionally.

    conv 4x4 stride 4 1->128, LeakyReLU 0.1, three 1x1 128->128 (+LeakyReLU), 1x1 128->32, average over the
    sub-image (= ClassSR's global pool), FC 32->M as a 1x1 conv. Input (N, 1, h, w) LR Y in [0, 1];
    output logits (N, M, ceil(h/P), ceil(w/P)). Partial sub-images at the bottom/right edge are filled by
    replicate padding (ClassSR crops full sub-images only; documented in docs/LOSS.md).
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
        # ClassSR's init: Kaiming (fan_in) scaled by 0.1, zero biases -> nearly uniform class probabilities
        for m in [*self.body, self.fc]:
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


class AnchorHead(nn.Module):
    """Per-pixel K-bin classifier (and optional offset) for one pyramid level.

    logits = conv(F) - tau*|K*(I - A_k)| (a Laplace prior, I detached) for fgd_head prior/prior_offset; conv(F) for
    literal. F (N, C, H, W), I (N, 1, H, W) -> logits (N, K, H, W); offset (N, 1, H, W) or None.
    window (`forward_window`): logits over the 2w+1 bins k0 + d around k0 = bin(I), (N, 2w+1, H, W).
    """

    def __init__(self, channels: int, bins: int, kernel: int, mode: str, window: int = 0) -> None:
        super().__init__()
        self.bins, self.mode, self.window = bins, mode, window
        outputs = 2 * window + 1 if mode == "window" else bins
        self.cls = nn.Conv2d(channels, outputs, kernel, padding=kernel // 2)
        self.use_prior = mode != "literal"
        if self.use_prior:
            # zero-init: at start the prior alone decides, i.e. argmax = the bin of the regression I
            nn.init.zeros_(self.cls.weight)
            nn.init.zeros_(self.cls.bias)
            self.log_tau = nn.Parameter(torch.zeros(()))  # prior sharpness tau = exp(log_tau), starts at 1
            self.register_buffer("anchors", anchor_value(torch.arange(bins), bins).view(1, bins, 1, 1), False)
            # window: relative offsets d = -w..w of the candidate bins (float, one per logit channel)
            self.register_buffer("deltas", torch.arange(-window, window + 1).float().view(1, -1, 1, 1), False)
        has_offset = mode in ("prior_offset", "literal")
        self.offset = nn.Conv2d(channels, 1, kernel, padding=kernel // 2) if has_offset else None
        if mode == "prior_offset" and self.offset is not None:
            nn.init.zeros_(self.offset.weight)  # zero-init: starts exactly at the "prior" design
            nn.init.zeros_(self.offset.bias)

    def _prior(self, image: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """The prior as |u - c_j| per channel j: (u (N, 1, H, W), c (1, C_out, 1, 1), k0 or None); None for literal.

        prior: u = s*I, c_k = s*A_k with s = tau*K, i.e. tau*|K*(I - A_k)|, one channel per bin k.
        window: u = tau*r, c_d = tau*d with r = K*I - k0 - 0.5, i.e. tau*|K*(I - A_{k0+d})| (`forward_window`).
        """
        if not self.use_prior:
            return None, None, None
        img = image.detach().float()
        tau = self.log_tau.exp()
        if self.mode == "window":
            k0 = bin_float(img, self.bins)
            return tau * (img * self.bins - k0 - 0.5), tau * self.deltas, k0
        s = tau * self.bins
        return s * img, s * self.anchors, None

    def forward(self, feat: Tensor, image: Tensor) -> tuple[Tensor, Tensor | None]:
        logits = self.cls(feat).float()
        u, c, _ = self._prior(image)
        if u is not None:
            # |s*I - s*A_k| with s = tau*K > 0: two K-channel passes instead of four
            logits = logits - (u - c).abs()
        off = self.offset(feat).float() if self.offset is not None else None
        return logits, off

    def forward_window(self, feat: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        """Window logits (N, 2w+1, H, W) and the centre bin k0 = bin(I) (N, 1, H, W) as float32.

        logit_d = conv(F)_d - tau*|K*(I - A_{k0+d})|. With A_{k0+d} = (k0 + d + 0.5)/K this is
        -tau*|r - d|, r = K*I - k0 - 0.5 computed once on one channel: only the |tau*r - tau*d| pass and the conv
        touch 2w+1 channels. Bins k0 + d outside [0, K-1] keep their virtual anchor (outside [0, 1]), so the prior
        ranks them below the edge bin; if one is chosen anyway it is clamped to the edge bin (`window_bin`).
        """
        u, c, k0 = self._prior(image)
        return self.cls(feat).float() - (u - c).abs(), k0

    def infer(self, feat: Tensor, image: Tensor) -> tuple[Tensor, Tensor | None]:
        """Inference: the argmax channel j (N, 1, H, W) float32 of `forward`'s / `forward_window`'s logits, and k0.

        Eager, for a 1x1 head on float32 features: the 1x1 conv written as the GEMM it is, W (C_out, C) @ F (C, H*W)
        with the prior and bias in the accumulator (`baddbmm_`, beta = -1), so the full-resolution C_out-channel
        map is written once and read once by the argmax instead of passing through four element-wise kernels; on a
        2-core CPU at 720p the head took 144 ms instead of 419 ms as conv + prior (benchmarks/bench_head.py).
        Traced (torch.compile, torch.export for ONNX Runtime / TensorRT) and for a 3x3 head or fp16 features:
        conv + prior, as in `forward`: the compiler fuses prior and argmax into one pass and picks the
        conv's memory layout, which measured faster there than any GEMM form (docs/BENCHMARKS.md, "The head as one
        GEMM"). Channel-major (C_out, H*W) because a pixel-major GEMM with 9 output columns (fgd_head window)
        hit a slow BLAS path (269 vs 57 ms). Same logits either way, up to summation order.
        """
        u, c, k0 = self._prior(image)
        if self.cls.kernel_size != (1, 1) or feat.dtype != torch.float32 or torch.compiler.is_compiling():
            logits = self.cls(feat).float()
            if u is not None:
                logits = logits - (u - c).abs()
            return channel_argmax(logits).float(), k0
        n, ch, h, w = feat.shape
        bias = self.cls.bias.view(1, -1, 1)
        weight = self.cls.weight.view(1, -1, ch).expand(n, -1, -1)  # (N, C_out, C), a view
        if u is None:  # literal: no prior
            logits = torch.baddbmm(bias, weight, feat.flatten(2))
        else:
            # |u - c| - b in one (N, C_out, H*W) buffer, then the GEMM into it (in place: indices carry no gradient)
            dist = (u.reshape(n, 1, h * w) - c.view(1, -1, 1)).abs_()
            logits = dist.sub_(bias).baddbmm_(weight, feat.flatten(2), beta=-1)  # W F + b - prior
        return channel_argmax(logits).view(n, 1, h, w).float(), k0


def channel_argmax(logits: Tensor) -> Tensor:
    """argmax over dim 1, keepdim: (N, C, H, W) -> (N, 1, H, W) int64, the first maximum on ties (as argmax).

    `max(dim).indices` rather than `argmax`: same result, but torch's CPU argmax over the channel dim of an NCHW
    tensor is a slow strided reduction (720p, 9 channels: 118 vs 32 ms; 32 channels: 173 vs 117 ms, 2 threads).
    """
    return logits.max(dim=1, keepdim=True).indices


def window_to_bin(j: Tensor, k0: Tensor, window: int, bins: int) -> Tensor:
    """Absolute bin of window channel j: clamp(k0 + j - w, 0, K-1); j, k0 (N, 1, H, W) float32 -> float32."""
    return (k0 + j - window).clamp(0, bins - 1)


def window_bin(logits: Tensor, k0: Tensor, window: int, bins: int) -> Tensor:
    """Chosen absolute bin of a window head: clamp(k0 + argmax_j - w, 0, K-1), (N, 1, H, W) float32."""
    return window_to_bin(channel_argmax(logits).float(), k0, window, bins)


class SRModel(nn.Module):
    """An SR trunk (LapSRN, SRCNN, VDSR) with the heads `cfg.loss` needs.

    forward(x): the inference graph, (N, 1, h, w) -> (N, 1, h*s, w*s) in [0, 1]-ish (not clamped), hard argmax;
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
        self.fgd_head = getattr(cfg, "fgd_head", "prior")
        if self.fgd_head not in FGD_HEADS:
            raise UserError(f"config field 'fgd_head': unknown '{self.fgd_head}' ({', '.join(FGD_HEADS)})")
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
        self.heads = nn.ModuleDict(
            {
                str(lv): AnchorHead(channels, cfg.bins, cfg.head_kernel, self.fgd_head, self.window)
                for lv in self.head_levels
            }
        )
        self.class_module = ClassModule(len(cfg.areas), cfg.class_patch) if self.variant == "fd" else None
        areas = cfg.areas if self.variant == "fd" else [cfg.static_area]
        # half-width of an area of `a` bins around the predicted bin: h = (a/2)/K (in [0, 1] grey units)
        self.register_buffer("halfwidths", torch.tensor([a / 2 / cfg.bins for a in areas]), False)

    # ----------------------------------------------------------------------------------------------- helpers
    def _pyramid(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        images, feats = self.trunk.forward_pyramid(x)
        return list(images), list(feats)

    def _project(self, image: Tensor, anchor: Tensor, half: Tensor | float, off: Tensor | None) -> Tensor:
        """S in the anchor area; literal: S = A + h*tanh(offset head), ignoring the regression image."""
        y = anchor if self.fgd_head == "literal" else image.float()
        return area_offset(y, anchor, half, off)

    def optim_groups(self) -> list[dict]:
        """Adam parameter groups: {"name", "params", "lr_scale"[, "eps"]}; train.py sets lr = lr_at(step) * lr_scale.

        The Class-Module (FD) is a group of its own so that its optimiser settings can differ from the trunk's
        (docs/LOSS.md, "Eq. 4 and Fig. 4").
        """
        cm = [p for p in self.class_module.parameters() if p.requires_grad] if self.class_module else []
        own = {id(p) for p in cm}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
        groups = [{"name": "trunk", "params": rest, "lr_scale": 1.0}]
        if cm:
            groups.append({"name": "class_module", "params": cm, "lr_scale": 1.0})
        return groups

    def load_baseline(self, state: dict[str, Tensor]) -> None:
        """Load a baseline trunk state (keys with or without a `trunk.` prefix); heads keep their init."""
        prefix = "trunk."
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        self.trunk.load_state_dict(state)

    # --------------------------------------------------------------------------------------------- inference
    def forward(self, x: Tensor) -> Tensor:
        if self.variant in ("l1", "aux"):
            return self.trunk(x)  # aux: identical graph to the baseline's, the head is training-only
        images, feats = self._pyramid(x)
        lv = self.levels - 1
        image = images[lv]
        head = self.heads[str(lv)]
        j, k0 = head.infer(feats[lv], image)  # hard argmax, no softmax at inference
        k = window_to_bin(j, k0, self.window, self.bins) if self.window else j
        off = head.offset(feats[lv]).float() if head.offset is not None else None
        anchor = anchor_value(k, self.bins)
        if self.class_module is not None:
            cls = self.class_module.forward_padded(x).argmax(dim=1, keepdim=True)  # one area per sub-image
            half = self.halfwidths[cls]  # a table lookup (ONNX Gather); no expand, so no size-1 shape guard
            half = nearest_up(half, self.cfg.class_patch * 2 ** (lv + 1), image.shape[-2], image.shape[-1])
        else:
            half = self.halfwidths[0]
        return self.trunk.finalize(self._project(image, anchor, half, off), x)

    # ---------------------------------------------------------------------------------------------- training
    def forward_train(self, x: Tensor, targets: list[Tensor] | None = None) -> ModelOutput:
        images, feats = self._pyramid(x)
        outputs: list[Tensor] = list(images)
        logits_all: list[Tensor | None] = [None] * len(images)
        centers: list[Tensor | None] = [None] * len(images)
        class_logits = class_probs = None
        if self.class_module is not None:
            class_logits = self.class_module(x).float()
            class_probs = class_logits.softmax(dim=1)
        for lv in self.head_levels:
            image = images[lv]
            head = self.heads[str(lv)]
            if self.window:
                logits, k0 = head.forward_window(feats[lv], image)
                off, centers[lv] = None, k0.long()
            else:
                logits, off = head(feats[lv], image)
            logits_all[lv] = logits
            if self.variant == "aux":
                continue  # auxiliary classification only: the output stays the regression image
            if self.cfg.anchor_source == "gt":
                if targets is None:
                    raise ValueError("anchor_source='gt' needs forward_train(x, targets)")
                k = bin_index(targets[lv], self.bins)
            elif self.window:
                k = window_bin(logits.detach(), k0, self.window, self.bins)
            else:
                k = channel_argmax(logits.detach())
            anchor = anchor_value(k, self.bins)
            y = image.float()
            if class_probs is None:
                outputs[lv] = self._project(y, anchor, self.halfwidths[0], off)
            else:
                # ClassSR's soft assignment: S_mix = sum_m P_m * S(h_m), P nearest-upsampled to the pixels
                p = nearest_up(class_probs, self.cfg.class_patch * 2 ** (lv + 1), y.shape[-2], y.shape[-1])
                half = self.halfwidths.view(1, -1, 1, 1)
                outputs[lv] = (p * self._project(y, anchor, half, off)).sum(dim=1, keepdim=True)
        return ModelOutput(
            images, outputs, logits_all, class_logits, class_probs, centers if self.window else None
        )
