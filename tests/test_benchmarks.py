"""The benchmark scripts run end to end at a tiny size (their numbers are recorded in docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_bench_head_forms_agree():
    """Every way of forming the FD head's logits (conv, GEMM with the prior in the accumulator, ...) picks the same
    bins as the first form, for both heads."""
    out = run("bench_head.py", "--hr-size", "96x64", "--threads", "1", "--reps", "1", "--no-compile")
    agreements = [float(a) for a in re.findall(r"argmax agreement ([0-9.]+)", out)]
    assert len(agreements) == 10  # 2 heads x (4 forms + shipped), eager only
    assert min(agreements) == 1.0, out


def test_bench_latency_json_profile_and_kernel_tables(tmp_path):
    path = tmp_path / "latency.json"
    run("bench_latency.py", "--hr-size", "64x48", "--iters", "2", "--threads", "1", "--backends", "torch",
        "--variants", "fd,aux", "--profile", "--kernels", "--json", str(path))  # fmt: skip
    res = json.loads(path.read_text())
    pairs = {p["pair"]: p for p in res["pairs"]}
    assert set(pairs) == {"fd/l1", "aux/l1"}
    assert pairs["fd/l1"]["cand_mult_adds"] > pairs["fd/l1"]["l1_mult_adds"]  # the head's GEMM is counted
    assert pairs["aux/l1"]["cand_mult_adds"] == pairs["aux/l1"]["l1_mult_adds"]
    assert all(p["ratio"] > 0 and p["low"] <= p["high"] for p in res["pairs"])
    assert any(k.startswith("head:") for k in res["fd_profile_ms"])
    tables = res["kernels"]
    assert set(tables) == {"torch/l1", "torch/fd", "torch/aux"}
    for rows in tables.values():
        assert rows and [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)


def test_kernel_table_shows_the_eager_head_gemm(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_latency import kernel_table

    from fgdsr.checkpoint import save_model_checkpoint
    from fgdsr.config import TrainConfig
    from fgdsr.models import build_model

    ops = {}
    for loss in ("l1", "fd"):
        cfg = TrainConfig(loss=loss, depth=1, channels=8)
        ckpt = save_model_checkpoint(tmp_path / loss, build_model(cfg), cfg)
        ops[loss] = {r["op"] for r in kernel_table(ckpt, "64x48", "torch", "cpu", reps=1, top=1000)}
    assert "aten::baddbmm_" in ops["fd"] and "aten::baddbmm_" not in ops["l1"]  # the head runs as one GEMM
    assert "aten::avg_pool2d" in ops["fd"] - ops["l1"]  # the Class-Module
