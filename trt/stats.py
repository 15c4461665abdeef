"""Latency statistics and the verdict: percentiles, the ratio's interval pooled over fresh processes, the rule.

The ratio (candidate / baseline latency) is estimated from per-round log-ratios: in each interleaved round both
models run back to back, so log(median_cand / median_base) of that round cancels whatever the machine did during
it. Rounds come from P >= 3 fresh processes (trt.worker); a process can carry its own offset (memory layout,
thread placement, the load when it started), so rounds of one process are not independent draws. The interval
therefore treats the process as the unit: the 10 %-trimmed mean log-ratio of each process (one stray round in
ten, another job's burst, moves it little), then a Student t interval over the P process values (df = P - 1),
exponentiated. Between-process drift is inside it by construction, at the price of a wide t quantile for few
processes (P = 3: 4.30, P = 5: 2.78); more processes narrow it faster than more rounds, hence the default of 5.

The verdict: "no extra inference cost" only when the whole interval lies within [1 - tol, 1 + tol].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_TOLERANCE = 0.03
LEVEL = 0.95
TRIM = 0.1  # share of rounds cut at each end of a process's log-ratios before averaging


def summarize(times_ms: list[float] | np.ndarray) -> dict[str, float]:
    """{'median', 'p90', 'p99', 'mean', 'min', 'max', 'n'} of the times (ms; linear interpolation)."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timings")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"median": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(t.mean()),
            "min": float(t.min()), "max": float(t.max()), "n": int(t.size)}  # fmt: skip


def round_log_ratios(base_rounds: list[list[float]], cand_rounds: list[list[float]]) -> np.ndarray:
    """log(median(candidate) / median(baseline)) of each round; rounds[r] = the times (ms) of round r."""
    if len(base_rounds) != len(cand_rounds) or not base_rounds:
        raise ValueError("need the same, non-zero number of rounds for both models")
    return np.array(
        [math.log(np.median(c) / np.median(b)) for b, c in zip(base_rounds, cand_rounds, strict=True)]
    )


def t_quantile(q: float, df: int) -> float:
    """Student t quantile (scipy)."""
    from scipy.stats import t

    return float(t.ppf(q, df))


@dataclass(frozen=True)
class RatioInterval:
    """The latency ratio (geometric mean of per-round ratios, processes weighted equally) and its interval.

    low/high: the `level` interval; processes: P; rounds: all rounds; spread: SD of the process means of the
    log-ratio (how much processes disagree); round_sd: the pooled within-process SD of the per-round log-ratios.
    """

    ratio: float
    low: float
    high: float
    level: float
    processes: int
    rounds: int
    spread: float
    round_sd: float
    per_process: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k) if k != "per_process" else list(self.per_process)
            for k in self.__dataclass_fields__
        }


def pooled_interval(per_process: list[np.ndarray] | list[list[float]], level: float = LEVEL) -> RatioInterval:
    """The ratio's interval from per-round log-ratios of P processes (t over the processes' trimmed means, df = P - 1).

    With P = 1 (a quick run) the rounds themselves are the units (df = rounds - 1): it then says nothing about
    drift between processes, and `BenchmarkResult` marks it.
    """
    groups = [np.asarray(g, dtype=np.float64) for g in per_process if len(g)]
    if not groups:
        raise ValueError("no rounds")
    from scipy.stats import trim_mean

    units = np.array([trim_mean(g, TRIM) for g in groups]) if len(groups) > 1 else groups[0]
    n = len(units)
    centre = float(units.mean())
    sd = float(units.std(ddof=1)) if n > 1 else math.inf
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n) if n > 1 else math.inf
    within = [g - g.mean() for g in groups if len(g) > 1]
    dof = sum(len(w) - 1 for w in within)
    round_sd = float(math.sqrt(sum(float((w**2).sum()) for w in within) / dof)) if dof else math.nan
    return RatioInterval(ratio=math.exp(centre), low=math.exp(centre - half), high=math.exp(centre + half),
                         level=level, processes=len(groups), rounds=sum(len(g) for g in groups),
                         spread=sd if len(groups) > 1 else math.nan, round_sd=round_sd,
                         per_process=tuple(float(u) for u in units) if len(groups) > 1 else ())  # fmt: skip


def safe_ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is unknown or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


@dataclass(frozen=True)
class Verdict:
    """kind: 'no extra cost' | 'extra cost' | 'lower cost' | 'no claim'; text: the one line the report prints."""

    kind: str
    text: str
    tolerance: float

    @property
    def no_extra_cost(self) -> bool:
        return self.kind == "no extra cost"


def verdict(lat: RatioInterval, tolerance: float = DEFAULT_TOLERANCE) -> Verdict:
    """The rule, as strict as its words.

    - "no extra inference cost": the whole interval inside [1 - tol, 1 + tol];
    - "extra inference cost: +x %": the whole interval above 1 + tol (the cost exceeds the tolerance);
    - "lower inference cost: -x %": the whole interval below 1 - tol;
    - otherwise "no claim", with the measured change and which side of the tolerance the interval crosses.
    """
    r, lo, hi = lat.ratio, lat.low, lat.high
    ci = f"x{r:.3f}, {lat.level:.0%} CI [{lo:.3f}, {hi:.3f}] over {lat.processes} processes"
    tol = f"±{tolerance:.0%}"
    if 1 - tolerance <= lo and hi <= 1 + tolerance:
        return Verdict("no extra cost", f"no extra inference cost: latency {ci}, within {tol}", tolerance)
    if lo > 1 + tolerance:
        return Verdict(
            "extra cost", f"extra inference cost: latency {r - 1:+.1%} ({ci}; tolerance {tol})", tolerance
        )
    if hi < 1 - tolerance:
        return Verdict(
            "lower cost", f"lower inference cost: latency {r - 1:+.1%} ({ci}; tolerance {tol})", tolerance
        )
    crosses = [f"{b:.2f}" for b in (1 - tolerance, 1 + tolerance) if lo <= b <= hi]
    text = f"no claim: latency {r - 1:+.1%} measured ({ci}) but the interval crosses {' and '.join(crosses)}"
    if lat.processes < 2:
        text += "; one process only: rerun with --processes 3 or more"
    elif hi - lo > 2 * tolerance:
        text += "; noisy: more processes (--processes) narrow it fastest"
    return Verdict("no claim", text, tolerance)
