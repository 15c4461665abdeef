"""One fresh timing process of `fgdsr benchmark`: open both prepared models, time them interleaved, write JSON.

    python -m trt.worker JOB.json OUT.json

The parent (trt.bench) runs P of these one after the other, so whatever differs between processes (memory
layout, thread placement, the load when it started) shows up between their log-ratios and is inside the interval.
A UserError is written to OUT.json as {"error": "..."} (exit 2), so the parent can say it in one line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from fgdsr.errors import UserError
from trt.backends import BackendSpec, PreparedModel, open_prepared, torch_threads
from trt.timing import TimingPlan, Timings, time_interleaved, time_throughput


@dataclass(frozen=True)
class WorkerJob:
    """What a worker times: the two prepared models, how they run, the timing plan, the throughput batch (0: off)."""

    models: tuple[PreparedModel, PreparedModel]  # baseline, candidate
    spec: BackendSpec
    timing: TimingPlan
    throughput_batch: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerJob:
        d = json.loads(text)
        spec = d["spec"]
        return cls(tuple(PreparedModel(**m) for m in d["models"]),
                   BackendSpec(**{**spec, "shape": tuple(spec["shape"])}), TimingPlan(**d["timing"]),
                   d["throughput_batch"])  # fmt: skip


@dataclass(frozen=True)
class WorkerResult:
    """Per role: Timings, peak memory (MiB), throughput (images/s at the throughput batch, None when off)."""

    timings: dict[str, Timings]
    memory_mb: dict[str, float | None]
    throughput_ips: dict[str, float | None]
    threads: int | None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerResult:
        d = json.loads(text)
        return cls({r: Timings(**t) for r, t in d["timings"].items()}, d["memory_mb"], d["throughput_ips"],
                   d["threads"])  # fmt: skip


def run_job(job: WorkerJob) -> WorkerResult:
    """Open, measure memory, time interleaved, then (optionally) throughput at a larger batch; close."""
    backends = {}
    try:
        for m in job.models:
            backends[m.role] = open_prepared(m, job.spec)
        memory = {role: b.peak_memory_mb() for role, b in backends.items()}
        timings = time_interleaved(backends, job.timing)
        threads = next(iter(backends.values())).threads
    finally:
        for b in backends.values():
            b.close()
    throughput = dict.fromkeys(backends, None)
    for m in job.models if job.throughput_batch > 1 else ():
        b = open_prepared(m, job.spec.with_batch(job.throughput_batch))
        try:
            throughput[m.role] = time_throughput(b, job.timing, job.throughput_batch)
        finally:
            b.close()
    return WorkerResult(timings, memory, throughput, threads)


def main(argv: list[str]) -> int:
    job_path, out_path = Path(argv[0]), Path(argv[1])
    job = WorkerJob.from_json(job_path.read_text())
    try:
        with torch_threads(job.spec.threads):
            result = run_job(job)
    except UserError as e:
        out_path.write_text(json.dumps({"error": str(e)}))
        return 2
    out_path.write_text(result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
