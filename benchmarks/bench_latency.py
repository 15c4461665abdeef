"""Does FD cost extra at inference? fd/l1 and aux/l1 latency ratios of full-size LapSRN (x4, 720p) on CPU.

Full-size = the official layout, depth 10, 64 channels; random weights (latency does not depend on them).
Each pair runs through `trt.bench.run_benchmark` (interleaved rounds, the same code as `fgdsr benchmark`), on
the torch, torch-compile and onnxruntime backends. With --profile, one eager fd forward is split into trunk,
K-bin head (prior + GEMM + argmax), projection and Class-Module time, to show where FD's extra cost goes; with
--kernels, torch's profiler lists the top ops/kernels (device time on CUDA) of l1 and each candidate on the
torch / torch-compile backends.

    .venv/bin/python benchmarks/bench_latency.py [--hr-size 1280x720] [--iters 6] [--profile] [--kernels]
        [--json out.json] [--fgd-head prior,window] [--device cpu|cuda] [--precision fp32|fp16] [--threads N]

--fgd-head takes a comma list: each cs/fd variant is built once per head (named e.g. `fd:window`), every pair
against the same l1 checkpoint, so `--variants fd --fgd-head prior,window` compares both FD heads in one run.

Target (issue 5): fd/l1 <= 1.10 on each backend; aux/l1 = 1 within the tolerance. A 2-core CPU needs ~2 s per
720p inference, so the defaults time few iterations: read the confidence intervals, not just the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from fgdsr.checkpoint import save_model_checkpoint  # noqa: E402
from fgdsr.config import TrainConfig  # noqa: E402
from fgdsr.models import build_model  # noqa: E402
from trt.bench import TimingPlan, run_benchmark  # noqa: E402
from trt.shapes import lr_size, parse_size  # noqa: E402

FULL = {"model": "lapsrn", "layout": "official", "scale": 4, "depth": 10, "channels": 64}


def candidates(variants: list[str], heads: list[str]) -> list[str]:
    """Candidate names: `fd` (one head, as before) or `fd:prior`, `fd:window` (several heads); aux has no head."""
    if len(heads) <= 1:
        return list(variants)
    return [
        f"{v}:{h}" if v in ("cs", "fd") else v
        for v in variants
        for h in (heads if v in ("cs", "fd") else [""])
    ]


def make_checkpoints(root: Path, names: list[str], overrides: dict, heads: list[str]) -> dict[str, Path]:
    out = {}
    for name in ["l1", *names]:
        loss, _, head = name.partition(":")
        extra = dict(overrides if loss != "l1" else {})
        if loss in ("cs", "fd") and (head or heads):
            extra["fgd_head"] = head or heads[0]
        cfg = TrainConfig().replace(**FULL, loss=loss, **extra)
        torch.manual_seed(0)
        out[name] = save_model_checkpoint(root / name.replace(":", "-"), build_model(cfg), cfg)
    return out


def profile_fd(path: Path, hr: str, reps: int = 2) -> dict[str, float]:
    """Milliseconds of one fd forward split by part (torch eager, this CPU; min over `reps`)."""
    from fgdsr.checkpoint import load_model
    from fgdsr.models.fgd import area_offset

    model, cfg, _ = load_model(path)
    w, h = lr_size(parse_size(hr), cfg.scale)
    x = torch.rand(1, 1, h, w)
    lv = model.levels - 1
    head = model.heads[str(lv)]
    k_ch = f"{head.cls.out_channels} ch"
    best: dict[str, float] = {}

    def clock(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        best[name] = min(best.get(name, float("inf")), (time.perf_counter() - t0) * 1e3)
        return out

    with torch.inference_mode():
        model(x)  # warm-up
        for _ in range(reps):
            images, feats = clock("trunk (LapSRN pyramid)", lambda: model._pyramid(x))
            f, img = feats[lv], images[lv]
            # AnchorHead.infer: prior over the channels, GEMM, argmax -> anchor (what SRModel.forward runs)
            anchor = clock(
                f"head: prior + GEMM 64->{k_ch} + argmax at HR", lambda f=f, i=img: head.infer(f, i)
            )
            clock("anchor + projection (1 ch at HR)",
                  lambda i=img, a=anchor: area_offset(i, a, model.halfwidths[0]))  # fmt: skip
            if model.class_module is not None:
                clock("Class-Module (LR, 32x32 sub-images)", lambda: model.class_module(x))
            clock("whole fd forward", lambda: model(x))
            clock("l1 trunk forward (for reference)", lambda: model.trunk(x))
    return best


def kernel_table(path: Path, hr: str, backend: str, device: str, reps: int = 5, top: int = 15) -> list[dict]:
    """torch's profiler over `reps` forwards of one checkpoint on torch / torch-compile: the `top` ops by self time.

    On CUDA the device time of each kernel (inductor's fused Triton kernels, cuDNN/cuBLAS calls), on CPU the
    host time; ms and calls are per forward. Compare an l1 and an fd table to see which kernels FD adds.
    """
    from torch.profiler import ProfilerActivity, profile

    from fgdsr.checkpoint import load_model

    model, cfg, _ = load_model(path)
    w, h = lr_size(parse_size(hr), cfg.scale)
    model = model.to(device).eval()
    fn = torch.compile(model, dynamic=False) if backend == "torch-compile" else model
    x = torch.rand(1, 1, h, w, device=device)
    cuda = device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode():
        for _ in range(3):  # compile and warm up outside the profile
            fn(x)
        if cuda:
            torch.cuda.synchronize()
        with profile(activities=acts) as prof:
            for _ in range(reps):
                fn(x)
            if cuda:
                torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us > 0:
            rows.append({"op": e.key[:80], "ms": us / 1e3 / reps, "calls": e.count / reps})
    rows.sort(key=lambda r: -r["ms"])
    return rows[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hr-size", default="1280x720")
    ap.add_argument("--iters", type=int, default=6, help="timed iterations per model (one per round)")
    ap.add_argument("--backends", default="torch,onnxruntime")
    ap.add_argument("--variants", default="fd,aux")
    ap.add_argument(
        "--set", nargs="*", default=[], help="config overrides for the candidates, e.g. head_kernel=3"
    )
    ap.add_argument(
        "--fgd-head", default="", help="comma list of fgd_head values for cs/fd, e.g. prior,window"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--kernels", action="store_true",
                    help="also print the top ops/kernels of l1 and each candidate on each torch backend")  # fmt: skip
    ap.add_argument("--json", help="write all results here")
    args = ap.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    plan = TimingPlan(warmup_iters=1, warmup_ms=0, min_iters=args.iters, min_seconds=0, min_rounds=args.iters,
                      target_rounds=args.iters)  # fmt: skip
    results = {
        "hr_size": args.hr_size,
        "threads": args.threads or torch.get_num_threads(),
        "device": args.device,
        "precision": args.precision,
        "pairs": [],
        "overrides": overrides,
    }
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        heads = [h for h in args.fgd_head.split(",") if h]
        names = candidates(args.variants.split(","), heads)
        ckpts = make_checkpoints(Path(tmp), names, overrides, heads)
        for backend in args.backends.split(","):
            for variant in names:
                t0 = time.time()
                r = run_benchmark(str(ckpts["l1"]), str(ckpts[variant]), backend=backend,
                                  hr_size=parse_size(args.hr_size), dataset=None, plan=plan,
                                  device=args.device, precision=args.precision, threads=args.threads,
                                  workdir=Path(tmp) / f"work-{backend}")  # fmt: skip
                lat = r["latency_interval"]
                base, cand = r["rows"]
                line = {"backend": backend, "pair": f"{variant}/l1", "l1_ms": base["latency_ms"]["median"],
                        "cand_ms": cand["latency_ms"]["median"], "ratio": lat["ratio"], "low": lat["low"],
                        "high": lat["high"], "iters": base["iterations"], "params_ratio": r["ratios"]["params"],
                        "mult_adds_ratio": r["ratios"]["mult_adds"], "l1_mult_adds": base["mult_adds"],
                        "cand_mult_adds": cand["mult_adds"], "cand_elementwise": cand["elementwise"],
                        "l1_elementwise": base["elementwise"], "verdict": r["verdict"],
                        "wall_s": round(time.time() - t0, 1), "machine": r["machine"]}  # fmt: skip
                results["pairs"].append(line)
                print(f"{backend:12s} {variant}/l1: l1 {line['l1_ms']:.0f} ms, {variant} {line['cand_ms']:.0f} ms, "
                      f"ratio {lat['ratio']:.3f} [{lat['low']:.3f}, {lat['high']:.3f}] ({line['iters']} iters) "
                      f"-> {r['verdict']}", flush=True)  # fmt: skip
        for name in [n for n in names if n.partition(":")[0] == "fd"] if args.profile else []:
            key = "fd_profile_ms" if name == "fd" else f"{name}_profile_ms"
            results[key] = profile_fd(ckpts[name], args.hr_size)
            print(f"profile {name} (torch eager, cpu):")
            for k, v in results[key].items():
                print(f"  {k:45s} {v:8.1f} ms")
        for backend in [b for b in args.backends.split(",") if b.startswith("torch")] if args.kernels else []:
            for name in ["l1", *names]:
                rows = kernel_table(ckpts[name], args.hr_size, backend, args.device)
                results.setdefault("kernels", {})[f"{backend}/{name}"] = rows
                print(f"top ops, {name} on {backend} ({args.device}), ms per forward:")
                for r in rows:
                    print(f"  {r['ms']:9.3f} ms  x{r['calls']:5.1f}  {r['op']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
