"""`fgdsr benchmark`: baseline vs candidate on one backend, interleaved, with complexity, accuracy and a verdict.

Method (trtexec's care, issue 5): fixed shapes (the LR input of the HR size at the scale), a warm-up of each
model (>= `warmup_iters` iterations or `warmup_ms`, whichever comes first), then timed rounds that alternate the
two models (baseline first in even rounds, candidate first in odd ones) until each has >= `min_iters`
iterations or `min_seconds` of timed work (and at least `min_rounds` rounds). Per model: median/p90/p99 of the
end-to-end latency (GPU: with pinned host<->device copies) and of the GPU compute alone (CUDA events), the
throughput, the peak memory of one inference; params/weights/Mult-Adds (true and naive) from trt.complexity;
PSNR/SSIM on a data set computed through the same backend. The verdict is in trt/stats.py.
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fgdsr.errors import UserError
from trt.backends import Backend, open_backend
from trt.shapes import Size, lr_size
from trt.stats import DEFAULT_TOLERANCE, ratio_interval, safe_ratio, summarize, verdict

ROLES = ("baseline", "candidate")


@dataclass
class TimingPlan:
    """How long to warm up and time each model (defaults: issue 5; tests and CPU benchmarks pass smaller)."""

    warmup_iters: int = 50
    warmup_ms: float = 200.0
    min_iters: int = 200
    min_seconds: float = 3.0
    min_rounds: int = 5
    target_rounds: int = 20  # iterations per round are sized so the timed phase has about this many rounds


def warm_up(backend: Backend, plan: TimingPlan) -> float:
    """Run until `warmup_iters` iterations or `warmup_ms` have passed (at least one); -> median ms."""
    times: list[float] = []
    t0 = time.perf_counter()
    while not times or (len(times) < plan.warmup_iters and (time.perf_counter() - t0) * 1e3 < plan.warmup_ms):
        times.append(backend.step()[0])
    return float(np.median(times))


def time_interleaved(
    backends: dict[str, Backend], plan: TimingPlan
) -> dict[str, dict[str, list[list[float]]]]:
    """Warm up every backend, then time them in alternating rounds; -> role -> {'e2e': rounds, 'compute': rounds}.

    Each round runs `k` iterations of each model back to back; `k` is chosen from the warm-up so that the
    timed phase has about `target_rounds` rounds. Machine drift (thermal, other jobs) hits both models alike.
    """
    roles = list(backends)
    est = {role: warm_up(b, plan) for role, b in backends.items()}
    per_iter = max(est.values())
    want_iters = max(plan.min_iters, 1)
    k_by_time = plan.min_seconds * 1e3 / plan.target_rounds / max(per_iter, 1e-6)
    k_by_iters = want_iters / plan.target_rounds
    k = max(1, int(min(k_by_time, k_by_iters)))
    out = {role: {"e2e": [], "compute": []} for role in roles}
    spent = dict.fromkeys(roles, 0.0)
    count = dict.fromkeys(roles, 0)
    r = 0
    while True:
        order = roles if r % 2 == 0 else roles[::-1]
        for role in order:
            e2e, comp = [], []
            for _ in range(k):
                e, c = backends[role].step()
                e2e.append(e)
                comp.append(c if c is not None else math.nan)
            out[role]["e2e"].append(e2e)
            out[role]["compute"].append(comp)
            spent[role] += sum(e2e) / 1e3
            count[role] += k
        r += 1
        enough = all(count[x] >= plan.min_iters or spent[x] >= plan.min_seconds for x in roles)
        if r >= plan.min_rounds and enough:
            return out


def machine_info(device: str) -> dict[str, Any]:
    """CPU model, cores, OS, library versions and (on CUDA) the GPU name."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    info = {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}  # fmt: skip
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def count_complexity(cfg, hr: tuple[int, int]) -> dict[str, Any]:
    """params, weights, Mult-Adds (true and naive) and element-wise work of cfg's inference graph at HR (w, h)."""
    from fgdsr.models import build_model
    from trt.complexity import lr_size as complexity_lr
    from trt.complexity import profile

    model, lr_hw = build_model(cfg).eval(), complexity_lr(hr, cfg.scale)
    try:
        prof = profile(model, lr_hw, device="meta")  # shapes only: milliseconds at any size
    except (NotImplementedError, RuntimeError):
        prof = profile(model, lr_hw, device="cpu")
    return {"params": prof.params, "weights": prof.weights, "mult_adds": prof.mult_adds_true,
            "mult_adds_naive": prof.mult_adds_naive, "elementwise": prof.elementwise}  # fmt: skip


class BackendUpscaler:
    """LR RGB uint8 (h, w, 3) -> SR RGB uint8 (h*s, w*s, 3) with the Y channel through `backend`.

    `fgdsr.inference.ModelUpscaler` around the backend (Y by the network, CbCr by MATLAB bicubic, the same
    colour maths as for a torch model), so PSNR of an ONNX/TensorRT/FP16 model shows what that backend loses.
    For torch-compile the eager model computes the images (a compiled graph is specialised to one shape).
    """

    def __init__(self, backend: Backend, scale: int) -> None:
        import torch

        from fgdsr.inference import ModelUpscaler

        class BackendModule(torch.nn.Module):
            """The backend as a Y model: torch (N, 1, h, w) float -> torch (N, 1, H, W) float32."""

            def forward(self, y: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(backend.infer(y.detach().cpu().float().numpy()))

        self.scale = int(scale)  # an int .scale: fgdsr.evaluate uses this instance as is
        self.inner = ModelUpscaler(BackendModule(), scale, "cpu")

    def __call__(self, lr_rgb: np.ndarray) -> np.ndarray:
        return self.inner(lr_rgb)


def accuracy(
    upscaler, dataset: str, scale: int, data_root: str | None, max_images: int | None = None
) -> dict[str, float | None]:
    """Mean PSNR/SSIM (dB / 1) of `upscaler` on `dataset` at `scale` via fgdsr.evaluate (the paper's protocol)."""
    from fgdsr.evaluate import evaluate

    result = evaluate({"model": upscaler}, [dataset], [scale], data_root, max_images=max_images)
    return extract_mean(result, dataset, scale)


def extract_mean(result: dict[str, Any], dataset: str, scale: int) -> dict[str, float | None]:
    """The mean PSNR/SSIM for (dataset, scale) in fgdsr.evaluate's `{"results": [...]}`."""
    for row in result["results"]:
        if int(row["scale"]) == int(scale):
            return {"psnr": float(row["psnr"]), "ssim": float(row["ssim"])}
    return {"psnr": None, "ssim": None}


def run_benchmark(
    baseline: str,
    candidate: str,
    *,
    backend: str = "torch",
    precision: str = "fp32",
    scale: int = 4,
    hr_size: Size = Size(1280, 720),
    batch: int = 1,
    dataset: str | None = "Set5",
    data_root: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    plan: TimingPlan | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    workdir: str | Path | None = None,
    tracking_uri: str | None = None,
    cuda_graph: bool = False,
) -> dict[str, Any]:
    """Benchmark `candidate` against `baseline` (checkpoints, run ids, .onnx or engines); -> the JSON dict.

    `dataset=None` skips PSNR/SSIM. The result holds the issue's schema (rows, ratios, verdict) and more
    (method, machine, per-row compute/throughput/memory, the latency interval).
    """
    import torch

    from trt.sources import resolve_source

    plan = plan or TimingPlan()
    if batch < 1:
        raise UserError("--batch: must be at least 1")
    if threads:
        torch.set_num_threads(threads)
    threads = threads or torch.get_num_threads()
    lr_w, lr_h = lr_size(hr_size, scale, "--hr-size")
    shape = (batch, 1, lr_h, lr_w)
    hr = (hr_size.width, hr_size.height) if not hr_size.lr else (lr_w * scale, lr_h * scale)
    sources = {"baseline": resolve_source(baseline, tracking_uri, "--baseline"),
               "candidate": resolve_source(candidate, tracking_uri, "--candidate")}  # fmt: skip
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fgdsr-bench-")
        workdir = tmp.name
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    backends: dict[str, Backend] = {}
    rows: list[dict[str, Any]] = []
    try:
        cfgs, infos = {}, {}
        for role in ROLES:
            b, cfg, info = open_backend(sources[role], backend, shape, precision=precision, device=device,
                                        threads=threads, workdir=workdir, role=role, cuda_graph=cuda_graph)  # fmt: skip
            if cfg.scale != scale:
                raise UserError(f"--{role}: '{sources[role].label}' is a x{cfg.scale} model, --scale is {scale}; "
                                f"pass --scale {cfg.scale}")  # fmt: skip
            backends[role], cfgs[role], infos[role] = b, cfg, info
        memory = {role: b.peak_memory_mb() for role, b in backends.items()}
        timings = time_interleaved(backends, plan)
        for role in ROLES:
            b = backends[role]
            e2e = summarize([t for r in timings[role]["e2e"] for t in r])
            comp_all = [t for r in timings[role]["compute"] for t in r if not math.isnan(t)]
            comp = summarize(comp_all) if comp_all else None
            acc = {"psnr": None, "ssim": None}
            if dataset:
                acc = accuracy(BackendUpscaler(b, scale), dataset, scale, data_root)
            row = {"role": role, "backend": b.name, "precision": b.precision,
                   **count_complexity(cfgs[role], hr),
                   "latency_ms": {k: e2e[k] for k in ("median", "p90", "p99")},
                   "psnr": acc["psnr"], "ssim": acc["ssim"],
                   "compute_ms": {k: comp[k] for k in ("median", "p90", "p99")} if comp else None,
                   "throughput_ips": batch * 1e3 / e2e["median"], "peak_memory_mb": memory[role],
                   "iterations": e2e["n"], "variant": cfgs[role].loss, "source": infos[role]["source"],
                   "device": b.device, "threads": b.threads}  # fmt: skip
            rows.append(row)
    finally:
        for b in backends.values():
            b.close()
        if tmp is not None:
            tmp.cleanup()
    lat = ratio_interval(timings["baseline"]["e2e"], timings["candidate"]["e2e"])
    base, cand = rows
    ver = verdict(lat, tolerance)
    result = {
        "rows": rows,
        "ratios": {
            "params": safe_ratio(cand["params"], base["params"]),
            "mult_adds": safe_ratio(cand["mult_adds"], base["mult_adds"]),
            "latency": lat["ratio"],
        },  # fmt: skip
        "verdict": ver["text"],
        "latency_interval": lat,
        "no_extra_cost": ver["no_extra_cost"],
        "tolerance": tolerance,
        "method": {
            "backend": backend,
            "device": device,
            "precision": precision,
            "scale": scale,
            "hr_size": list(hr),
            "lr_input": list(shape),
            "batch": batch,
            "dataset": dataset,
            "threads": threads,
            "interleaved": True,
            **asdict(plan),
        },  # fmt: skip
        "machine": machine_info(device),
    }
    if tracking_uri:
        from trt.report import log_mlflow

        result["mlflow_run_id"] = log_mlflow(result, tracking_uri)
    return result
