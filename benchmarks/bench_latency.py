"""Does FD cost extra at inference? fd/l1 and aux/l1 latency verdicts of full-size LapSRN (x4, 720p) per backend.

Full-size = `fgdsr/configs/lapsrn.yaml`'s architecture (official layout, depth 10, 64 channels, x4) with random
weights (latency does not depend on them). Every pair runs through `trt.bench.run_benchmark` with the tool's
defaults (the same code and statistics as `fgdsr benchmark`: 5 fresh processes, interleaved rounds, the t interval
over the processes' mean log-ratios, the ±3 % rule); `--profile` adds the per-operator profile (trunk / FD
head / Class-Module) of each pair on torch and onnxruntime.

    .venv/bin/python benchmarks/bench_latency.py --all [--json out.json] [--markdown out.md]
    .venv/bin/python benchmarks/bench_latency.py --backends onnxruntime --pairs aux [--processes 3] [--threads 2]

`--all` = the tables of docs/BENCHMARKS.md: backends torch, torch-compile, onnxruntime; pairs fd (the default
head), fd:window (`fgd_head=window`) and aux, each against the same l1; profiles of fd and fd:window.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fgdsr.checkpoint import save_model_checkpoint  # noqa: E402
from fgdsr.config import load_config  # noqa: E402
from fgdsr.models import build_model  # noqa: E402
from trt.bench import BenchmarkPlan, run_benchmark  # noqa: E402
from trt.fmt import fmt, md_table  # noqa: E402
from trt.machine import describe_machine  # noqa: E402
from trt.report import profile_rows, result_dict, top_ops_rows  # noqa: E402
from trt.shapes import parse_size  # noqa: E402
from trt.timing import TimingPlan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FULL_CONFIG = ROOT / "fgdsr" / "configs" / "lapsrn.yaml"
ALL = {"backends": "onnxruntime,torch,torch-compile", "pairs": "aux,fd,fd:window", "profile": True}


def make_checkpoints(root: Path, pairs: list[str], overrides: dict) -> dict[str, Path]:
    """l1 and each candidate (`fd`, `fd:window` = fd with fgd_head=window, `aux`, ...) of lapsrn.yaml, seed 0."""
    import torch

    out = {}
    for name in ["l1", *pairs]:
        loss, _, head = name.partition(":")
        extra = {**(overrides if loss != "l1" else {}), **({"fgd_head": head} if head else {})}
        cfg = load_config(FULL_CONFIG, {"loss": loss, **extra})
        torch.manual_seed(0)
        out[name] = save_model_checkpoint(root / name.replace(":", "-"), build_model(cfg), cfg)
    return out


def pair_line(backend: str, pair: str, result) -> dict:
    base, cand = result.rows
    lat = result.latency
    return {"backend": backend, "pair": f"{pair}/l1", "l1_ms": base.latency_ms["median"],
            "cand_ms": cand.latency_ms["median"], "ratio": lat.ratio, "low": lat.low, "high": lat.high,
            "processes": lat.processes, "rounds": lat.rounds, "verdict": result.verdict.text,
            "kind": result.verdict.kind, "params_ratio": result.ratios["params"],
            "mult_adds_ratio": result.ratios["mult_adds"], "load": result.machine.load}  # fmt: skip


def markdown(results: list[tuple[str, str, object]], header: str) -> str:
    """The BENCHMARKS.md tables: one verdict row per (backend, pair), then each profile."""
    rows = [[b, f"{p}/l1", fmt(r.rows[0].latency_ms["median"], 0), fmt(r.rows[1].latency_ms["median"], 0),
             f"**{r.latency.ratio:.3f}** [{r.latency.low:.3f}, {r.latency.high:.3f}]", str(r.latency.rounds),
             r.verdict.kind, "/".join(f"{v:.1f}" for v in r.machine.load or ())] for b, p, r in results]  # fmt: skip
    out = [header, "", md_table(("backend", "pair", "l1 ms", "candidate ms", "ratio [95 % CI]", "rounds", "verdict",
                                 "load 1/5/15"), rows), ""]  # fmt: skip
    for b, p, r in results:
        if r.profiles:
            out += [f"Profile, {p} vs l1 on {b} (ms per forward, each model profiled alone):", "",
                    md_table(("group", "l1", p, "difference", f"{p}, % of its trunk"), profile_rows(r)), "",
                    md_table(("group", "operator", "calls", "ms"), top_ops_rows(r, 8)), ""]  # fmt: skip
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="the docs/BENCHMARKS.md tables (see the docstring)")
    ap.add_argument("--hr-size", default="1280x720")
    ap.add_argument("--backends", default="torch,onnxruntime")
    ap.add_argument("--pairs", default="fd,aux", help="candidates vs l1: fd, fd:window, aux, cs, ...")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for the candidates, e.g. bins=16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--min-rounds", type=int, default=TimingPlan().min_rounds)
    ap.add_argument("--profile", action="store_true", help="per-operator profiles (torch, onnxruntime)")
    ap.add_argument(
        "--throughput-batch", type=int, default=0, help="also time throughput at this batch (GPU)"
    )
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--markdown", help="write the Markdown tables here")
    args = ap.parse_args()
    if args.all:
        args.backends, args.pairs, args.profile = ALL["backends"], ALL["pairs"], ALL["profile"]
    overrides = dict(item.split("=", 1) for item in args.set)
    pairs = args.pairs.split(",")
    timing = replace(TimingPlan(), min_rounds=args.min_rounds)
    t0, stamp = time.time(), describe_machine(args.device)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        ckpts = make_checkpoints(Path(tmp), pairs, overrides)
        for backend in args.backends.split(","):
            for pair in pairs:
                plan = BenchmarkPlan(str(ckpts["l1"]), str(ckpts[pair]), backend=backend, precision=args.precision,
                                     device=args.device, threads=args.threads, hr_size=parse_size(args.hr_size),
                                     dataset=None, timing=timing, processes=args.processes,
                                     throughput_batch=args.throughput_batch,
                                     profile=args.profile and backend != "torch-compile" and pair != "aux",
                                     workdir=str(Path(tmp) / f"work-{backend}"))  # fmt: skip
                r = run_benchmark(plan)
                results.append((backend, pair, r))
                line = pair_line(backend, pair, r)
                print(f"{backend:13s} {pair}/l1: l1 {line['l1_ms']:.0f} ms, {pair} {line['cand_ms']:.0f} ms -> "
                      f"{r.verdict.text} [load {r.machine.load}]", flush=True)  # fmt: skip
    command = "benchmarks/bench_latency.py " + " ".join(sys.argv[1:])
    header = (f"`{command}` — {stamp.line()}; {time.time() - t0:.0f} s; threads {args.threads or os.cpu_count()}; "
              f"HR {args.hr_size} x4, random weights (lapsrn.yaml architecture), batch 1, {args.precision}")  # fmt: skip
    md = markdown(results, header)
    print(md)
    if args.markdown:
        Path(args.markdown).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "pairs": [result_dict(r) | {"backend": b,
                                               "pair": p} for b, p, r in results]}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
