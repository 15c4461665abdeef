"""The FGD loss (Eq. 3-6): L = L_r + alpha*mean(L_c1) + beta*mean(L_c2) (+ gamma*balance); see docs/LOSS.md.

Consumes the `ModelOutput` of `SRModel.forward_train` and the per-level HR targets (coarse to fine,
targets[l] (N, 1, H_l, W_l) in [0, 1]). Every pyramid level is supervised (LapSRN): Charbonnier of the
supervised output S_l (the anchor-area output at head levels, the regression image elsewhere), summed over levels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgdsr.losses.charbonnier import charbonnier
from fgdsr.models.fgd import ModelOutput, bin_index

# fgd_head "window": what L_c1 does with a GT bin outside the 2w+1-bin window. "edge" (used): the nearest window
# edge is the target; "ignore": such pixels are left out of L_c1 (the ablation in docs/RESULTS.md).
OUT_OF_WINDOW = "edge"


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


class FGDLoss(nn.Module):
    """`loss(out, targets, step=0) -> (total, terms)` for every `cfg.loss` (l1 is the Charbonnier sum alone).

    terms: floats `loss`, `l_r`, and where they apply `l_c1`, `l_c2`, `balance`, `bin_acc` (chosen bin = GT bin,
    at head levels), `alpha` (after warm-up), `area` (mean expected anchor area in bins, FD), `in_window`
    (fgd_head window: fraction of pixels whose GT bin lies in the 2w+1-bin window).
    With fgd_head window, L_c1 is the cross-entropy over the window (GT bins outside it: the nearest edge).
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.variant = cfg.loss
        self.eps = cfg.charbonnier_eps
        self.bins = cfg.bins
        self.alpha, self.beta, self.gamma = cfg.alpha, cfg.beta, cfg.gamma
        self.warmup = cfg.alpha_warmup_steps
        self.areas = list(cfg.areas)

    def alpha_at(self, step: int) -> float:
        """alpha ramped linearly from 0 over `alpha_warmup_steps` (no warm-up: alpha)."""
        if self.warmup <= 0:
            return self.alpha
        return self.alpha * min(1.0, step / self.warmup)

    def forward(
        self, out: ModelOutput, targets: list[Tensor], step: int = 0
    ) -> tuple[Tensor, dict[str, float]]:
        if len(targets) != len(out.outputs):
            raise ValueError(f"{len(out.outputs)} pyramid outputs but {len(targets)} targets")
        l_r = out.outputs[0].new_zeros((), dtype=torch.float32)
        for s, t in zip(out.outputs, targets, strict=True):
            if s.shape != t.shape:
                raise ValueError(f"output {tuple(s.shape)} and target {tuple(t.shape)} differ")
            l_r = l_r + charbonnier(s, t, self.eps)
        total = l_r
        l_i = None
        if out.centers is not None and self.variant != "aux":
            # fgd_head window: the candidate bins are centred on bin(I), so I must stay a good regression on its
            # own. S = A + h*tanh((I - A)/h) gives I no gradient once I is far outside the area; with the K-bin
            # head the classifier can still reach the GT bin, with the window it cannot (w bins at most): I
            # then drifts away and the model collapses (3 of 4 runs at lr 5e-3, docs/RESULTS.md). So I is also
            # supervised at the head levels, as LapSRN supervises every level's image (training only).
            l_i = sum(
                charbonnier(img, t, self.eps)
                for img, t, c in zip(out.images, targets, out.centers, strict=True)
                if c is not None
            )
            total = total + l_i
        # detached tensors, turned into floats with one device sync at the end (not one .item() per term)
        terms: dict[str, Tensor | float] = {"l_r": l_r.detach()}
        if l_i is not None:
            terms["l_i"] = l_i.detach()
        centers = out.centers or [None] * len(out.logits)
        heads = [(lg, t, c) for lg, t, c in zip(out.logits, targets, centers, strict=True) if lg is not None]
        if heads and self.variant != "l1":
            ce = l_r.new_zeros(())
            correct = l_r.new_zeros(())
            inside = l_r.new_zeros(())
            for logits, t, k0 in heads:
                gt = bin_index(t, self.bins)[:, 0]  # (N, H, W) absolute GT bin
                if k0 is None:
                    target, pred = gt, logits.detach().argmax(dim=1)
                else:
                    # window head: channel j = bin k0 + j - w. A GT bin outside the window becomes the nearest
                    # window edge (the largest move towards it; docs/LOSS.md): those pixels, where the regression
                    # is worst, still teach the direction.
                    w = (logits.shape[1] - 1) // 2
                    rel = gt - k0[:, 0] + w
                    inside = inside + ((rel >= 0) & (rel <= 2 * w)).float().mean()
                    if OUT_OF_WINDOW == "ignore":  # -100: cross_entropy's ignore_index
                        target = rel.masked_fill((rel < 0) | (rel > 2 * w), -100)
                    else:
                        target = rel.clamp(0, 2 * w)
                    pred = (k0[:, 0] + logits.detach().argmax(dim=1) - w).clamp(0, self.bins - 1)
                ce = ce + F.cross_entropy(logits.float(), target)  # Eq. 3, mean over pixels
                correct = correct + (pred == gt).float().mean()  # absolute bins for every head
            l_c1 = ce / len(heads)
            alpha = self.alpha_at(step)
            total = total + alpha * l_c1
            terms.update(l_c1=l_c1.detach(), bin_acc=correct / len(heads), alpha=alpha)
            if out.centers is not None:
                terms["in_window"] = inside / len(heads)
        if out.class_probs is not None:
            p = out.class_probs
            l_c2 = class_distance_loss(p)
            bal = balance_loss(p)
            total = total + self.beta * l_c2 + self.gamma * bal
            area = (p.mean(dim=(0, 2, 3)) * p.new_tensor(self.areas, dtype=p.dtype)).sum()
            terms.update(l_c2=l_c2.detach(), balance=bal.detach(), area=area.detach())
        terms["loss"] = total.detach()
        keys = [k for k, v in terms.items() if isinstance(v, Tensor)]
        values = torch.stack([terms[k].float() for k in keys]).tolist()
        return total, {**terms, **dict(zip(keys, values, strict=True))}
