"""Does FD cost extra at inference? fd/l1 and aux/l1 latency ratios of full-size LapSRN (x4, 720p) on CPU.

Full-size = the official layout, depth 10, 64 channels; random weights (latency does not depend on them).
Each pair runs through `trt.bench.run_benchmark` (interleaved rounds, the same code as `fgdsr benchmark`), on
the torch and onnxruntime backends. With --profile, torch's profiler splits one fd forward into trunk, K-bin
head, argmax/gather/tanh and Class-Module time, to show where FD's extra cost goes.

    .venv/bin/python benchmarks/bench_latency.py [--hr-size 1280x720] [--iters 6] [--profile] [--json out.json]

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


def make_checkpoints(root: Path, variants: list[str], overrides: dict) -> dict[str, Path]:
    out = {}
    for loss in ["l1", *variants]:
        cfg = TrainConfig().replace(**FULL, loss=loss, **(overrides if loss != "l1" else {}))
        torch.manual_seed(0)
        out[loss] = save_model_checkpoint(root / loss, build_model(cfg), cfg)
    return out


def profile_fd(path: Path, hr: str, reps: int = 2) -> dict[str, float]:
    """Milliseconds of one fd forward split by part (torch eager, this CPU; min over `reps`)."""
    from fgdsr.checkpoint import load_model
    from fgdsr.models.fgd import anchor_value

    model, cfg, _ = load_model(path)
    w, h = lr_size(parse_size(hr), cfg.scale)
    x = torch.rand(1, 1, h, w)
    lv = model.levels - 1
    head = model.heads[str(lv)]
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
            conv = clock("head conv 1x1 64->K at HR", lambda f=f: head.cls(f).float())
            logits = clock("prior -tau*|K(I-A_k)| over K ch at HR",
                           lambda c=conv, i=img: c - head.log_tau.exp() * ((i.float() - head.anchors) * head.bins).abs())  # fmt: skip
            k = clock("argmax over K at HR", lambda lg=logits: lg.argmax(dim=1, keepdim=True))
            clock("anchor + projection (1 ch at HR)",
                  lambda i=img, k=k: model._project(i, anchor_value(k, model.bins), model.halfwidths[0], None))  # fmt: skip
            if model.class_module is not None:
                clock("Class-Module (LR, 32x32 sub-images)", lambda: model.class_module(x))
            clock("whole fd forward", lambda: model(x))
            clock("l1 trunk forward (for reference)", lambda: model.trunk(x))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hr-size", default="1280x720")
    ap.add_argument("--iters", type=int, default=6, help="timed iterations per model (one per round)")
    ap.add_argument("--backends", default="torch,onnxruntime")
    ap.add_argument("--variants", default="fd,aux")
    ap.add_argument(
        "--set", nargs="*", default=[], help="config overrides for the candidates, e.g. head_kernel=3"
    )
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", help="write all results here")
    args = ap.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    plan = TimingPlan(warmup_iters=1, warmup_ms=0, min_iters=args.iters, min_seconds=0, min_rounds=args.iters,
                      target_rounds=args.iters)  # fmt: skip
    results = {
        "hr_size": args.hr_size,
        "threads": torch.get_num_threads(),
        "pairs": [],
        "overrides": overrides,
    }
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        ckpts = make_checkpoints(Path(tmp), args.variants.split(","), overrides)
        for backend in args.backends.split(","):
            for variant in args.variants.split(","):
                t0 = time.time()
                r = run_benchmark(str(ckpts["l1"]), str(ckpts[variant]), backend=backend,
                                  hr_size=parse_size(args.hr_size), dataset=None, plan=plan,
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
        if args.profile and "fd" in ckpts:
            results["fd_profile_ms"] = profile_fd(ckpts["fd"], args.hr_size)
            for k, v in results["fd_profile_ms"].items():
                print(f"  {k:45s} {v:8.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
