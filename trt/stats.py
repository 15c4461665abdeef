"""Latency statistics and the verdict: percentiles, a paired bootstrap over interleaved rounds, ratios.

Spread of the latency ratio (documented in docs/DEPLOY.md): baseline and candidate run in alternating rounds;
the ratio is median(candidate) / median(baseline) over all timed iterations, and its 95 % interval comes from a
bootstrap that resamples whole rounds (the same rounds for both models, so drift of the machine cancels).
"No extra inference cost" is claimed only when the interval's upper end is at most 1 + tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_TOLERANCE = 0.03


def summarize(times_ms: list[float] | np.ndarray) -> dict[str, float]:
    """{'median', 'p90', 'p99', 'mean', 'min', 'max', 'n'} of the times (ms; linear interpolation)."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timings")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"median": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(t.mean()),
            "min": float(t.min()), "max": float(t.max()), "n": int(t.size)}  # fmt: skip


def ratio_interval(
    base_rounds: list[list[float]],
    cand_rounds: list[list[float]],
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Ratio of medians (candidate / baseline) with a paired round bootstrap interval.

    base_rounds[r], cand_rounds[r]: the times (ms) of round r. Returns {'ratio', 'low', 'high',
    'round_iqr'} where round_iqr is the interquartile range of the per-round ratios of medians.
    """
    if len(base_rounds) != len(cand_rounds) or not base_rounds:
        raise ValueError("need the same, non-zero number of rounds for both models")
    base = [np.asarray(r, dtype=np.float64) for r in base_rounds]
    cand = [np.asarray(r, dtype=np.float64) for r in cand_rounds]
    ratio = float(np.median(np.concatenate(cand)) / np.median(np.concatenate(base)))
    per_round = np.array([np.median(c) / np.median(b) for b, c in zip(base, cand, strict=True)])
    rng = np.random.default_rng(seed)
    n = len(base)
    boots = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        boots[i] = np.median(np.concatenate([cand[j] for j in idx])) / np.median(
            np.concatenate([base[j] for j in idx])
        )
    alpha = (1 - level) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha])
    q1, q3 = np.percentile(per_round, [25, 75])
    return {"ratio": ratio, "low": float(low), "high": float(high), "round_iqr": float(q3 - q1), "rounds": n}


def safe_ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is unknown or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


def verdict(latency: dict[str, float], tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """The verdict from `ratio_interval`'s dict: 'no extra inference cost' only when high <= 1 + tolerance.

    'extra inference cost: +X %' when even the interval's low end is above 1 + tolerance; otherwise 'no claim'
    with the measured overhead. Returns {'no_extra_cost': bool, 'overhead': ratio - 1, 'text': one line}.
    """
    r, lo, hi = latency["ratio"], latency["low"], latency["high"]
    ci = f"x{r:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]"
    ok = hi <= 1 + tolerance
    if ok:
        text = f"no extra inference cost: latency {ci}, within +{tolerance:.0%}"
    elif lo > 1 + tolerance:
        text = f"extra inference cost: latency {r - 1:+.1%} ({ci}; tolerance +{tolerance:.0%})"
    else:  # the interval straddles the tolerance: report the measurement, claim nothing
        text = (f"no claim: latency {r - 1:+.1%} measured ({ci}) but the interval crosses the "
                f"+{tolerance:.0%} tolerance")  # fmt: skip
    if not ok and hi - lo > 2 * tolerance:
        text += "; noisy, rerun with more iterations"
    return {"no_extra_cost": ok, "overhead": r - 1, "text": text}
