"""Figures of the pipeline report: PSNR-vs-step of all trials, the paper's Fig. 1 and Fig. 5 analyses.

Inputs are plain numbers and uint8 arrays; every figure is written atomically as a PNG. matplotlib and numpy are
imported inside the functions (the CLI imports this module lazily anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fgdsr.atomic import save_figure_atomic


def _save(fig, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    return save_figure_atomic(fig, path, dpi=110, bbox_inches="tight")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_psnr_vs_step(histories: dict[str, Sequence[tuple[int, float]]], path: str | Path) -> Path:
    """One line per trial: validation PSNR (dB) against the training step. `histories[label] = [(step, psnr)]`."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, points in sorted(histories.items()):
        if not points:
            continue
        steps, psnrs = zip(*sorted(points), strict=True)
        style = "--" if label.split()[-1] in ("(l1)", "l1") else "-"
        ax.plot(steps, psnrs, style, marker="o", markersize=3, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation PSNR (dB, Y)")
    ax.set_title("All trials: validation PSNR vs step (dashed: l1 baseline)")
    ax.grid(alpha=0.3)
    if histories:
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares line y = slope·x + intercept and Pearson r (nan when fewer than 2 distinct x)."""
    import numpy as np

    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.size < 2 or np.ptp(xa) == 0:
        return {"slope": float("nan"), "intercept": float("nan"), "r": float("nan"), "n": int(xa.size)}
    slope, intercept = np.polyfit(xa, ya, 1)
    r = float(np.corrcoef(xa, ya)[0, 1]) if np.ptp(ya) > 0 else float("nan")
    return {"slope": float(slope), "intercept": float(intercept), "r": r, "n": int(xa.size)}


def plot_entropy_analysis(
    entropy: Sequence[float], psnr_baseline: Sequence[float], psnr_fgd: Sequence[float], path: str | Path
) -> dict[str, dict[str, float]]:
    """The paper's Fig. 1: per-image entropy (bits) vs PSNR (baseline, FGD) and vs ΔPSNR = FGD − baseline.

    One value per image in each sequence (PSNR in dB). Returns the three fitted trends.
    """
    import numpy as np

    plt = _plt()
    ent = [float(e) for e in entropy]
    base = [float(v) for v in psnr_baseline]
    fgd = [float(v) for v in psnr_fgd]
    delta = [f - b for f, b in zip(fgd, base, strict=True)]
    fits = {"baseline": linear_fit(ent, base), "fgd": linear_fit(ent, fgd), "delta": linear_fit(ent, delta)}
    grid = np.linspace(min(ent), max(ent), 50) if ent else np.array([])

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ys, fit, name, colour in (
        (base, fits["baseline"], "baseline (l1)", "tab:blue"),
        (fgd, fits["fgd"], "FGD", "tab:red"),
    ):
        a1.scatter(ent, ys, s=14, color=colour, alpha=0.7, label=name)
        if not np.isnan(fit["slope"]):
            a1.plot(
                grid,
                fit["slope"] * grid + fit["intercept"],
                color=colour,
                label=f"{name} trend: {fit['slope']:+.2f} dB/bit",
            )
    a1.set_xlabel("image entropy (bits, HR Y)")
    a1.set_ylabel("PSNR (dB)")
    a1.set_title("entropy vs PSNR")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=7)

    a2.axhline(0.0, color="gray", lw=0.8)
    a2.scatter(ent, delta, s=14, color="tab:green", alpha=0.8)
    fit = fits["delta"]
    if not np.isnan(fit["slope"]):
        a2.plot(
            grid,
            fit["slope"] * grid + fit["intercept"],
            color="tab:green",
            label=f"trend: {fit['slope']:+.3f} dB/bit, r = {fit['r']:.2f}",
        )
        a2.legend(fontsize=7)
    a2.set_xlabel("image entropy (bits, HR Y)")
    a2.set_ylabel("ΔPSNR = FGD − baseline (dB)")
    a2.set_title("entropy vs ΔPSNR")
    a2.grid(alpha=0.3)
    _save(fig, path)
    return fits


def best_crop_box(err_a, err_b, size: int, sign: float = 1.0) -> tuple[int, int, int]:
    """Top-left (y, x) and side of the `size`×`size` window maximising sign·Σ(err_a − err_b).

    `err_a`, `err_b`: (H, W) per-pixel squared errors (e.g. baseline, FGD). sign=+1 finds where b beats a most.
    Uses an integral image, O(H·W). The side shrinks to the image when it is smaller than `size`.
    """
    import numpy as np

    d = sign * (np.asarray(err_a, dtype=np.float64) - np.asarray(err_b, dtype=np.float64))
    h, w = d.shape
    s = int(min(size, h, w))
    ii = np.zeros((h + 1, w + 1))
    ii[1:, 1:] = d.cumsum(0).cumsum(1)
    sums = ii[s:, s:] - ii[:-s, s:] - ii[s:, :-s] + ii[:-s, :-s]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x), s


def crop_grid(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """The paper's Fig. 5: one row per image, columns HR / bicubic / baseline / FGD crops (uint8 (h, w, 3)).

    `rows`: dicts with title (str), crops (dict column name -> uint8 array), psnr (dict column -> dB or None).
    """
    plt = _plt()
    cols = list(rows[0]["crops"]) if rows else []
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.6 * len(cols), 3.2 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, name in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(row["crops"][name], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            db = (row.get("psnr") or {}).get(name)
            ax.set_title(name if db is None else f"{name}\n{db:.2f} dB", fontsize=8)
            if c == 0:  # the row's caption, above its first panel
                ax.text(0.0, 1.28, row["title"], transform=ax.transAxes, fontsize=9, ha="left", va="bottom")
    fig.suptitle("Crops where FGD gains most (top) and least (bottom) against the baseline", fontsize=9)
    return _save(fig, path)


def plot_validation_curves(
    curves: dict[str, Sequence[tuple[int, float]]], title: str, path: str | Path
) -> Path:
    """One trial's validation metrics against the step, one panel each (`curves[metric] = [(step, value)]`)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
    for ax, (name, points) in zip(axes[0], curves.items(), strict=True):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        ax.set_xlabel("step")
        ax.set_ylabel(name)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure_atomic(fig, path, dpi=80)
