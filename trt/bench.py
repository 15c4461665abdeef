"""`fgdsr benchmark`: baseline vs candidate on one backend, as plan -> stages -> record.

    plan = BenchmarkPlan(baseline, candidate, backend="onnxruntime")     # local paths; what to measure
    result = run_benchmark(plan)                                          # -> BenchmarkResult (frozen)
    trt.report.print_table(result); trt.report.write_report(result, out)  # renderers

Stages (`run_benchmark`): prepare the two models once (export / build into the work folder) -> time them in P
fresh worker processes (trt.worker: warm-up, interleaved rounds, peak memory, optional throughput batch) ->
params / Mult-Adds (trt.complexity) -> PSNR/SSIM through the same backend -> optional per-operator profiles
(trt.opprofile) -> the pooled interval and the verdict (trt.stats). trt knows nothing of MLflow: the
orchestrator resolves run ids before and logs the record after.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from fgdsr.errors import UserError
from trt.backends import BackendSpec, PreparedModel, open_prepared, prepare_model, torch_threads
from trt.complexity import DEFAULT_HR, complexity
from trt.machine import Machine, describe_machine
from trt.opprofile import OpProfile
from trt.shapes import Size, hr_of, lr_size
from trt.sources import resolve_source
from trt.stats import (
    DEFAULT_TOLERANCE,
    RatioInterval,
    Verdict,
    pooled_interval,
    round_log_ratios,
    safe_ratio,
    summarize,
    verdict,
)
from trt.timing import TimingPlan
from trt.worker import WorkerJob, WorkerResult

ROLES = ("baseline", "candidate")
DEFAULT_DATASET = "Set5"
FALLBACK_DATASET = "builtin-eval"


@dataclass(frozen=True)
class BenchmarkPlan:
    """What to benchmark and how. baseline/candidate: local checkpoint dirs, .onnx files or engines.

    dataset: PSNR/SSIM set ('' = the default: Set5 when present, else builtin-eval; None = skip).
    processes: fresh timing processes (>= 3 for a verdict whose interval holds between-process drift; 5 narrows
        the t quantile from 4.30 to 2.78).
    throughput_batch: > 1 adds a throughput measurement at that batch beside the latency (0 = off).
    """

    baseline: str
    candidate: str
    backend: str = "torch"
    precision: str = "fp32"
    device: str = "cpu"
    threads: int | None = None
    scale: int = 4
    hr_size: Size = DEFAULT_HR
    batch: int = 1
    dataset: str | None = ""
    data_root: str | None = None
    timing: TimingPlan = field(default_factory=TimingPlan)
    processes: int = 5
    throughput_batch: int = 0
    profile: bool = False
    tolerance: float = DEFAULT_TOLERANCE
    workdir: str | None = None  # exported .onnx / engines are kept here (a temp folder when None)
    cuda_graph: bool = False
    labels: tuple[str, str] = ("", "")  # what the user named (e.g. MLflow run ids); default: the paths

    @property
    def lr(self) -> Size:
        return lr_size(self.hr_size, self.scale, "--hr-size")

    def spec(self) -> BackendSpec:
        return BackendSpec(self.backend, (self.batch, 1, *self.lr.hw), self.precision, self.device, self.threads,
                           self.cuda_graph)  # fmt: skip


@dataclass(frozen=True)
class ModelRow:
    """One model's measurements. Times in ms (median/p90/p99), memory MiB, throughput images/s."""

    role: str
    label: str
    variant: str
    backend: str
    precision: str
    device: str
    threads: int | None
    params: int
    weights: int
    mult_adds: int
    mult_adds_naive: int
    elementwise: int
    latency_ms: dict[str, float]
    h2d_ms: float | None  # GPU: medians of the parts of the same inferences; None on the CPU
    compute_ms: dict[str, float] | None
    d2h_ms: float | None
    throughput_ips: float  # batch / median latency (the latency mode)
    throughput_batch_ips: float | None  # the throughput mode (`throughput_batch` images per inference)
    peak_memory_mb: float | None
    psnr: float | None
    ssim: float | None
    iterations: int


@dataclass(frozen=True)
class BenchmarkResult:
    """The record the renderers (trt.report) and the orchestrator (MLflow) consume."""

    plan: BenchmarkPlan
    rows: tuple[ModelRow, ModelRow]
    latency: RatioInterval
    verdict: Verdict
    threads: int | None
    machine: Machine
    profiles: tuple[OpProfile, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ratios(self) -> dict[str, float | None]:
        base, cand = self.rows
        return {"params": safe_ratio(cand.params, base.params),
                "mult_adds": safe_ratio(cand.mult_adds, base.mult_adds), "latency": self.latency.ratio}  # fmt: skip

    def to_dict(self) -> dict:
        """The JSON schema of `fgdsr benchmark --json` (issue 5's rows/ratios/verdict, and more)."""
        from trt.report import result_dict

        return result_dict(self)


def check_plan(plan: BenchmarkPlan) -> None:
    """One-line errors for a plan that cannot run (before anything is exported or timed)."""
    if plan.precision not in ("fp32", "fp16"):
        raise UserError(f"--precision '{plan.precision}': expected fp32 or fp16")
    if plan.batch < 1:
        raise UserError("--batch: must be at least 1")
    if plan.processes < 1:
        raise UserError("--processes: must be at least 1 (3 or more for a verdict)")
    t = plan.timing
    if (
        min(t.warmup_iters, t.min_iters, t.min_rounds, t.warmup_min) < 1
        or min(t.warmup_ms, t.min_seconds) < 0
    ):
        raise UserError(
            "--warmup-iters/--min-iters/--min-rounds must be >= 1, --warmup-ms/--min-seconds >= 0"
        )
    if plan.backend == "tensorrt" and not plan.device.startswith("cuda"):
        raise UserError("--backend tensorrt runs on --device cuda only")
    plan.lr  # noqa: B018  (raises on an impossible size)


def pick_dataset(requested: str | None, data_root: str | None) -> tuple[str | None, str | None]:
    """-> (data set, note). '' = the default: Set5 if it is under the data root, else builtin-eval (said)."""
    if requested != "":
        return requested, None
    from fgdsr.data.datasets import resolve_dataset

    try:
        resolve_dataset(DEFAULT_DATASET, data_root)
    except UserError:
        return FALLBACK_DATASET, (f"dataset: {DEFAULT_DATASET} not found (data root: --data-root / FGDSR_DATA_ROOT); "
                                  f"PSNR/SSIM on {FALLBACK_DATASET} (scikit-image's photos) instead")  # fmt: skip
    return DEFAULT_DATASET, None


def prepare_models(plan: BenchmarkPlan, workdir: Path) -> tuple[PreparedModel, PreparedModel]:
    """Both models as the files the backend runs (exported / built once, for every worker); scales checked."""
    out = []
    for role, text, label in zip(ROLES, (plan.baseline, plan.candidate), plan.labels, strict=True):
        src = resolve_source(text, f"--{role}", label or None)
        model = prepare_model(src, plan.spec(), workdir, role, max_batch=plan.throughput_batch)
        scale = model.cfg().scale
        if scale != plan.scale:
            raise UserError(
                f"--{role}: '{text}' is a x{scale} model, --scale is {plan.scale}; pass --scale {scale}"
            )
        out.append(model)
    return out[0], out[1]


def run_worker(job: WorkerJob, workdir: Path, index: int) -> WorkerResult:
    """One fresh process (`python -m trt.worker`); its UserError comes back as this process's UserError."""
    job_path, out_path = workdir / f"worker-{index}.json", workdir / f"worker-{index}.out.json"
    job_path.write_text(job.to_json())
    proc = subprocess.run([sys.executable, "-m", "trt.worker", str(job_path), str(out_path)], capture_output=True,
                          text=True)  # fmt: skip
    text = out_path.read_text() if out_path.exists() else ""
    if proc.returncode == 2 and '"error"' in text:
        import json

        raise UserError(json.loads(text)["error"])
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"benchmark worker {index} failed (exit {proc.returncode}): {tail[0]}")
    return WorkerResult.from_json(text)


def measure_latency(plan: BenchmarkPlan, models, workdir: Path) -> list[WorkerResult]:
    """P fresh worker processes, one after the other (never concurrently: they would share the CPU)."""
    job = WorkerJob(models, plan.spec(), plan.timing, plan.throughput_batch)
    return [run_worker(job, workdir, i) for i in range(plan.processes)]


def measure_accuracy(plan: BenchmarkPlan, models, dataset: str | None) -> dict[str, dict]:
    """PSNR/SSIM of each model through its backend on `dataset` ({'psnr': None, ...} when skipped)."""
    if not dataset:
        return {m.role: {"psnr": None, "ssim": None} for m in models}
    from fgdsr.evaluate import evaluate

    out = {}
    for m in models:
        backend = open_prepared(m, plan.spec())
        try:
            res = evaluate({"model": BackendUpscaler(backend, plan.scale)}, [dataset], [plan.scale],
                           plan.data_root)  # fmt: skip
        finally:
            backend.close()
        row = next(r for r in res["results"] if int(r["scale"]) == plan.scale)
        out[m.role] = {"psnr": float(row["psnr"]), "ssim": float(row["ssim"])}
    return out


class BackendUpscaler:
    """LR RGB uint8 (h, w, 3) -> SR RGB uint8 (h*s, w*s, 3) with the Y channel through `backend`.

    `fgdsr.inference.ModelUpscaler` around `backend.as_module()` (the torch backends' own model, no numpy round
    trip; ONNX Runtime / TensorRT through numpy, as their runtimes take it), so PSNR shows what the backend loses.
    """

    def __init__(self, backend, scale: int) -> None:
        from fgdsr.inference import ModelUpscaler

        self.scale = int(scale)  # an int .scale: fgdsr.evaluate uses this instance as is
        self.inner = ModelUpscaler(backend.as_module(), scale, "cpu")

    def __call__(self, lr_rgb):
        return self.inner(lr_rgb)


def profile_models(plan: BenchmarkPlan, models, reps: int = 5) -> tuple[OpProfile, ...]:
    """Per-operator profiles of both models on the plan's backend (trt.opprofile)."""
    from trt import opprofile

    shape = plan.spec().shape
    out = []
    for m in models:
        if plan.backend in ("torch", "torch-compile"):
            from fgdsr.checkpoint import load_model

            net, _, _ = load_model(m.path)
            out.append(
                opprofile.torch_profile(
                    net, shape, plan.device, reps, plan.backend == "torch-compile", m.role
                )
            )
        elif plan.backend == "onnxruntime":
            out.append(opprofile.ort_profile(m.path, shape, plan.threads, reps, m.role, plan.device))
        else:
            out.append(opprofile.tensorrt_profile(m.path, m.onnx, shape, reps, m.role))
    return tuple(out)


def _median(rounds: list[list[float]]) -> float | None:
    flat = [t for r in rounds for t in r]
    return summarize(flat)["median"] if flat else None


def model_row(plan: BenchmarkPlan, m: PreparedModel, workers: list[WorkerResult], acc: dict) -> ModelRow:
    """Pool one model's timings over the workers and add its complexity and accuracy."""
    timings = [w.timings[m.role] for w in workers]
    e2e = summarize([t for tm in timings for t in tm.flat()])
    compute = [t for tm in timings for t in tm.flat("compute")]
    comp = summarize(compute) if compute else None
    gpu = plan.device.startswith("cuda")
    cfg = m.cfg()
    counts = complexity(cfg, hr_size=hr_of(plan.hr_size, plan.scale)).counts
    thr = [w.throughput_ips[m.role] for w in workers if w.throughput_ips.get(m.role)]
    mem = [w.memory_mb[m.role] for w in workers if w.memory_mb.get(m.role) is not None]
    return ModelRow(role=m.role, label=m.label, variant=cfg.loss, backend=plan.backend, precision=plan.precision,
                    device=plan.device, threads=workers[0].threads, params=counts.params, weights=counts.weights,
                    mult_adds=counts.mult_adds_true, mult_adds_naive=counts.mult_adds_naive,
                    elementwise=counts.elementwise, latency_ms={k: e2e[k] for k in ("median", "p90", "p99")},
                    h2d_ms=_median([r for tm in timings for r in tm.h2d]) if gpu else None,
                    compute_ms={k: comp[k] for k in ("median", "p90", "p99")} if comp and gpu else None,
                    d2h_ms=_median([r for tm in timings for r in tm.d2h]) if gpu else None,
                    throughput_ips=plan.batch * 1e3 / e2e["median"],
                    throughput_batch_ips=sum(thr) / len(thr) if thr else None,
                    peak_memory_mb=max(mem) if mem else None, psnr=acc["psnr"], ssim=acc["ssim"],
                    iterations=e2e["n"])  # fmt: skip


def pooled_latency(workers: list[WorkerResult]) -> RatioInterval:
    """The candidate/baseline interval from every worker's per-round log-ratios (trt.stats.pooled_interval)."""
    per_process = [round_log_ratios(w.timings["baseline"].e2e, w.timings["candidate"].e2e) for w in workers]
    return pooled_interval(per_process)


def run_benchmark(plan: BenchmarkPlan) -> BenchmarkResult:
    """Benchmark `plan.candidate` against `plan.baseline`: prepare, time (fresh processes), count, evaluate, profile."""
    check_plan(plan)
    dataset, note = pick_dataset(plan.dataset, plan.data_root)
    with tempfile.TemporaryDirectory(prefix="fgdsr-bench-") as tmp:
        workdir = Path(plan.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        models = prepare_models(plan, workdir)
        workers = measure_latency(plan, models, workdir)
        with torch_threads(plan.threads) as threads:
            acc = measure_accuracy(plan, models, dataset)
            profiles = profile_models(plan, models) if plan.profile else ()
        rows = tuple(model_row(plan, m, workers, acc[m.role]) for m in models)
    lat = pooled_latency(workers)
    return BenchmarkResult(plan=replace(plan, dataset=dataset), rows=rows, latency=lat,
                           verdict=verdict(lat, plan.tolerance),
                           threads=workers[0].threads or threads, machine=describe_machine(plan.device),
                           profiles=profiles, notes=(note,) if note else ())  # fmt: skip
