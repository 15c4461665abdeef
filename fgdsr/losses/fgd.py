"""The FGD loss (Eq. 3-6): L = L_r + alpha*mean(L_c1) + beta*mean(L_c2) (+ gamma*balance); see docs/LOSS.md.

Consumes the `ModelOutput` of `SRModel.forward_train` and the per-level HR targets (coarse to fine,
targets[l] (N, 1, H_l, W_l) in [0, 1]). Every pyramid level is supervised (LapSRN): Charbonnier of the
supervised output S_l (the anchor-area output at head levels, the regression image elsewhere), combined over the
levels with `cfg.level_weights` (equal: a plain sum; pixels: each level weighted by its pixel count relative to
the finest, as LapSRN's sum over pixels does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgdsr.config import check_whole_class_tiles
from fgdsr.losses.charbonnier import charbonnier
from fgdsr.models.fgd import BinGrid, ModelOutput


def class_distance_loss(probs: Tensor) -> Tensor:
    """L_c2 = -sum_{i<j} |P_i - P_j| (Eq. 4) per sub-image, averaged over sub-images.

    probs: (N, M, th, tw) class probabilities. In [-2, 0] for M = 3 (-2: one-hot; 0: uniform).
    """
    m = probs.shape[1]
    total = probs.new_zeros(())
    for i in range(m - 1):
        for j in range(i + 1, m):
            total = total + (probs[:, i] - probs[:, j]).abs().mean()
    return -total


def balance_loss(probs: Tensor) -> Tensor:
    """ClassSR's average loss, per sub-image: sum_j |mean_i P_j(x_i) - 1/M| over the sub-images x_i of a batch.

    ClassSR writes sum_j |sum_i P_j(x_i) - B/M|; dividing by B keeps the weight independent of the batch size.
    probs: (N, M, th, tw) -> scalar in [0, 2 - 2/M].
    """
    m = probs.shape[1]
    mean = probs.transpose(0, 1).reshape(m, -1).mean(dim=1)
    return (mean - 1.0 / m).abs().sum()


def two_hot(position: Tensor, channels: int) -> Tensor:
    """Soft labels for a continuous bin position (N, H, W) (bin units; centre of bin k at k + 0.5).

    The weight is split between the two bin centres around it by linear distance (distribution focal loss
    style), so that sum_k p_k (k + 0.5) = position wherever it lies between the first and last centre; outside,
    all the weight goes to the edge bin. -> (N, C, H, W) rows summing to 1.
    """
    u = (position - 0.5).clamp(0.0, channels - 1.0)
    lo = u.floor().clamp(max=channels - 2) if channels > 1 else u.floor()
    frac = u - lo
    lo = lo.long()
    out = torch.zeros(position.shape[0], channels, *position.shape[1:], device=position.device)
    out.scatter_(1, lo.unsqueeze(1), (1.0 - frac).unsqueeze(1))
    if channels > 1:
        out.scatter_add_(1, (lo + 1).clamp(max=channels - 1).unsqueeze(1), frac.unsqueeze(1))
    return out


def classification_loss(
    logits: Tensor, target: Tensor, k0: Tensor | None, grid: BinGrid, labels: str
) -> Tensor:
    """L_c1 (Eq. 3) for one head level, mean over pixels. target: the HR level (N, 1, H, W) in [0, 1].

    onehot: cross-entropy with the GT bin (window head: the GT bin mapped into the 2w+1 window; a GT bin outside
    it targets the nearest window edge, the largest move in the right direction). twohot: cross-entropy with the
    two-hot soft label of the GT value (`two_hot`). ordinal: sum over the K-1 thresholds of the binary
    cross-entropy of "GT bin >= k" (DORN), mean over pixels.
    """
    gt = grid.index(target)[:, 0]  # (N, H, W) absolute GT bin
    if labels == "ordinal":
        thresholds = torch.arange(1, grid.count, device=logits.device).view(1, -1, 1, 1)
        above = (gt.unsqueeze(1) >= thresholds).float()
        return F.binary_cross_entropy_with_logits(logits, above, reduction="none").sum(dim=1).mean()
    if k0 is not None:
        w = (logits.shape[1] - 1) // 2
        return F.cross_entropy(logits, (gt - k0[:, 0] + w).clamp(0, 2 * w))
    if labels == "twohot":
        soft = two_hot(grid.position(target)[:, 0], logits.shape[1])
        return -(soft * logits.log_softmax(dim=1)).sum(dim=1).mean()
    return F.cross_entropy(logits, gt)


class FGDLoss(nn.Module):
    """`loss(out, targets, step=0) -> (total, terms)` for every `cfg.loss` (l1 is the Charbonnier sum alone).

    terms: floats `loss`, `l_r`, and where they apply `l_i`, `l_c1`, `l_c2`, `balance`, `bin_acc` (the hard
    decode's bin = the GT bin, at head levels), `alpha` (after warm-up), `area` (mean expected anchor area in bins,
    FD), `in_window` (fgd_head window: fraction of pixels whose GT bin lies in the 2w+1-bin window).
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        check_whole_class_tiles(cfg)
        self.variant = cfg.loss
        self.eps = cfg.charbonnier_eps
        self.grid = BinGrid.from_config(cfg)
        self.labels = cfg.bin_labels
        self.alpha, self.beta, self.gamma = cfg.alpha, cfg.beta, cfg.gamma
        self.warmup = cfg.alpha_warmup_steps
        self.areas = list(cfg.areas)
        self.level_weights = cfg.level_weights

    def alpha_at(self, step: int) -> float:
        """alpha ramped linearly from 0 over `alpha_warmup_steps` (no warm-up: alpha)."""
        if self.warmup <= 0:
            return self.alpha
        return self.alpha * min(1.0, step / self.warmup)

    def _weights(self, targets: list[Tensor]) -> list[float]:
        """Per-level weights of L_r: 1 each (equal), or pixels(l)/pixels(finest) (pixels: finest 1, next 1/4 ...)."""
        if self.level_weights == "equal":
            return [1.0] * len(targets)
        finest = targets[-1].shape[-1] * targets[-1].shape[-2]
        return [t.shape[-1] * t.shape[-2] / finest for t in targets]

    def forward(
        self, out: ModelOutput, targets: list[Tensor], step: int = 0
    ) -> tuple[Tensor, dict[str, float]]:
        if len(targets) != len(out.outputs):
            raise ValueError(f"{len(out.outputs)} pyramid outputs but {len(targets)} targets")
        weights = self._weights(targets)
        l_r = out.outputs[0].new_zeros((), dtype=torch.float32)
        for s, t, wt in zip(out.outputs, targets, weights, strict=True):
            if s.shape != t.shape:
                raise ValueError(f"output {tuple(s.shape)} and target {tuple(t.shape)} differ")
            l_r = l_r + wt * charbonnier(s, t, self.eps)
        total = l_r
        terms: dict[str, Tensor | float] = {"l_r": l_r.detach()}
        centers = out.centers or [None] * len(out.logits)
        if out.centers is not None and self.variant != "aux":
            # fgd_head window: the candidate bins are centred on bin(I), so I must stay a good regression on its
            # own. S = A + h*tanh((I - A)/h) gives I no gradient once I is far outside the area; with the K-bin
            # head the classifier can still reach the GT bin, with the window it cannot (w bins at most): I
            # then drifts away and the model collapses (3 of 4 runs at lr 5e-3, docs/RESULTS.md). So I is also
            # supervised at the head levels, as LapSRN supervises every level's image (training only).
            l_i = sum(
                wt * charbonnier(img, t, self.eps)
                for img, t, c, wt in zip(out.images, targets, centers, weights, strict=True)
                if c is not None
            )
            total = total + l_i
            terms["l_i"] = l_i.detach()
        anchors = out.anchors or [None] * len(out.logits)
        heads = [
            (lg, t, c, a)
            for lg, t, c, a in zip(out.logits, targets, centers, anchors, strict=True)
            if lg is not None
        ]
        if any(a is None for *_, a in heads):
            raise ValueError("ModelOutput.anchors: the hard anchor is needed at every level with logits")
        if heads and self.variant != "l1":
            total = total + self._classification(heads, step, terms)
        if out.class_probs is not None:
            p = out.class_probs
            l_c2 = class_distance_loss(p)
            bal = balance_loss(p)
            total = total + self.beta * l_c2 + self.gamma * bal
            area = (p.mean(dim=(0, 2, 3)) * p.new_tensor(self.areas, dtype=p.dtype)).sum()
            terms.update(l_c2=l_c2.detach(), balance=bal.detach(), area=area.detach())
        terms["loss"] = total.detach()
        # detached tensors, turned into floats with one device sync (not one .item() per term)
        keys = [k for k, v in terms.items() if isinstance(v, Tensor)]
        values = torch.stack([terms[k].float() for k in keys]).tolist()
        return total, {**terms, **dict(zip(keys, values, strict=True))}

    def _classification(self, heads: list, step: int, terms: dict) -> Tensor:
        """alpha * mean over head levels of L_c1; records l_c1, bin_acc, alpha (and in_window) in `terms`."""
        ce = correct = inside = None
        for logits, t, k0, anchor in heads:
            c = classification_loss(logits.float(), t, k0, self.grid, self.labels)
            hit = (self.grid.index(anchor) == self.grid.index(t)).float().mean()  # the hard decode's bin
            ce, correct = (c, hit) if ce is None else (ce + c, correct + hit)
            if k0 is not None:
                w = (logits.shape[1] - 1) // 2
                rel = self.grid.index(t) - k0
                cover = ((rel >= -w) & (rel <= w)).float().mean()
                inside = cover if inside is None else inside + cover
        n = len(heads)
        alpha = self.alpha_at(step)
        terms.update(l_c1=(ce / n).detach(), bin_acc=(correct / n).detach(), alpha=alpha)
        if inside is not None:
            terms["in_window"] = (inside / n).detach()
        return alpha * ce / n
