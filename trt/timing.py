"""The timing loop: warm-up, then interleaved rounds of baseline and candidate (trtexec's care, issue 5).

Each round runs `k` iterations of each model back to back (baseline first in even rounds, candidate first in
odd ones), so machine drift within a round hits both alike and the per-round log-ratio cancels it
(trt.stats). `k` is sized from the warm-up so that `min_rounds` rounds give `min_seconds` of timed work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from trt.backends import Backend, Step


@dataclass(frozen=True)
class TimingPlan:
    """How one worker process warms up and times each model.

    Warm-up: at least `warmup_min` iterations, then until `warmup_ms` have passed or `warmup_iters` ran (a 720p
    CPU inference is ~2 s: a time-only warm-up of 200 ms was one cold iteration). Timed: at least `min_rounds`
    rounds, and until each model has `min_iters` iterations or `min_seconds` of timed work.
    """

    warmup_iters: int = 50
    warmup_ms: float = 200.0
    warmup_min: int = 3
    min_iters: int = 200
    min_seconds: float = 3.0
    min_rounds: int = 10


@dataclass(frozen=True)
class Timings:
    """One model's timed rounds: e2e[r] = the end-to-end ms of round r's iterations; h2d/compute/d2h alike (GPU)."""

    e2e: list[list[float]]
    h2d: list[list[float]] = field(default_factory=list)
    compute: list[list[float]] = field(default_factory=list)
    d2h: list[list[float]] = field(default_factory=list)

    def flat(self, part: str = "e2e") -> list[float]:
        """All iterations of `part` ('e2e' | 'h2d' | 'compute' | 'd2h'), in order."""
        return [t for r in getattr(self, part) for t in r]


def warm_up(backend: Backend, plan: TimingPlan) -> float:
    """Warm up per `plan`; -> the median ms of the last half of the warm-up (the settled speed)."""
    times: list[float] = []
    t0 = time.perf_counter()
    while len(times) < plan.warmup_min or (
        len(times) < plan.warmup_iters and (time.perf_counter() - t0) * 1e3 < plan.warmup_ms
    ):
        times.append(backend.step().e2e)
    return float(np.median(times[len(times) // 2 :]))


def iterations_per_round(per_iter_ms: float, plan: TimingPlan) -> int:
    """k: `min_rounds` rounds of k iterations reach `min_seconds` (or `min_iters`) per model."""
    k_by_time = plan.min_seconds * 1e3 / plan.min_rounds / max(per_iter_ms, 1e-6)
    k_by_iters = plan.min_iters / plan.min_rounds
    return max(1, int(min(k_by_time, k_by_iters)))


def _run_round(backend: Backend, k: int) -> list[Step]:
    return [backend.step() for _ in range(k)]


def time_interleaved(backends: dict[str, Backend], plan: TimingPlan) -> dict[str, Timings]:
    """Warm up every backend, then time them in alternating rounds; -> role -> Timings."""
    roles = list(backends)
    per_iter = max(warm_up(b, plan) for b in backends.values())
    k = iterations_per_round(per_iter, plan)
    steps: dict[str, list[list[Step]]] = {role: [] for role in roles}
    spent = dict.fromkeys(roles, 0.0)
    r = 0
    while True:
        for role in roles if r % 2 == 0 else roles[::-1]:
            got = _run_round(backends[role], k)
            steps[role].append(got)
            spent[role] += sum(s.e2e for s in got) / 1e3
        r += 1
        enough = all(r * k >= plan.min_iters or spent[x] >= plan.min_seconds for x in roles)
        if r >= plan.min_rounds and enough:
            return {role: _to_timings(rounds) for role, rounds in steps.items()}


def _to_timings(rounds: list[list[Step]]) -> Timings:
    def part(name: str) -> list[list[float]]:
        got = [[getattr(s, name) for s in rnd] for rnd in rounds]
        return got if all(v is not None for rnd in got for v in rnd) else []

    return Timings(part("e2e"), part("h2d"), part("compute"), part("d2h"))


def time_throughput(backend: Backend, plan: TimingPlan, batch: int) -> float:
    """Images per second of `backend` (opened at a batch of `batch`): warm-up, then `min_rounds` x k iterations."""
    per_iter = warm_up(backend, plan)
    k = iterations_per_round(per_iter, plan)
    t0 = time.perf_counter()
    n = 0
    for _ in range(plan.min_rounds):
        _run_round(backend, k)
        n += k
    return batch * n / (time.perf_counter() - t0)
