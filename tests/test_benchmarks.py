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


def test_bench_latency_verdicts_and_profile_tables(tmp_path):
    path, md = tmp_path / "latency.json", tmp_path / "latency.md"
    run("bench_latency.py", "--hr-size", "64x48", "--processes", "1", "--min-rounds", "2", "--threads", "1",
        "--backends", "torch", "--pairs", "fd,aux", "--profile", "--json", str(path), "--markdown", str(md))  # fmt: skip
    res = json.loads(path.read_text())
    pairs = {p["pair"]: p for p in res["pairs"]}
    assert set(pairs) == {"fd", "aux"}
    fd, aux = pairs["fd"], pairs["aux"]
    assert fd["rows"][1]["mult_adds"] > fd["rows"][0]["mult_adds"]  # the head's GEMM is counted
    assert aux["rows"][1]["mult_adds"] == aux["rows"][0]["mult_adds"]  # aux deploys the baseline's graph
    for p in res["pairs"]:
        lat = p["latency_interval"]
        assert lat["low"] <= lat["ratio"] <= lat["high"] and lat["processes"] == 1
    groups = fd["profile"]["candidate"]["groups_ms"]
    assert all(groups[g] > 0 for g in ("trunk", "FD head", "Class-Module")) and "profile" not in aux
    text = md.read_text()
    assert "| torch | fd/l1 |" in text and "Profile, fd vs l1 on torch" in text and res["header"] in text


def test_fgd_readings_pairs_runs_by_seed_and_scores_test_sets(tmp_path):
    """Two seeds of l1 and fd at a few steps: every run's test images are kept, and the paired Δ printed for the
    test set is the mean over seeds × images of fd − l1 from the saved per-image scores."""
    tiny = ["--set", "train_dataset=builtin-train", "--set", "val_dataset=builtin-val", "--set", "depth=1",
            "--set", "channels=4", "--set", "class_patch=16", "--set", "val_max_images=1"]  # fmt: skip
    out = run("fgd_readings.py", "--out", str(tmp_path), "--steps", "4", "--seeds", "0", "1", "--jobs", "1",
              *tiny, "--reading", "fd:loss=fd", "--test-set", "builtin-eval")  # fmt: skip
    runs = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["reading"], r["seed"]) for r in runs) == [("fd", 0), ("fd", 1), ("l1", 0), ("l1", 1)]
    score = {(r["reading"], r["seed"]): r["tests"]["builtin-eval"] for r in runs}
    assert all(len(s) == 5 for s in score.values())  # the 5 built-in test photos
    diffs = [score[("fd", s)][im] - score[("l1", s)][im] for s in (0, 1) for im in score[("l1", s)]]
    row = re.search(r"^\s+fd\s+2\s+([0-9.]+)\s+([+-][0-9.]+)\s+\[([+-][0-9.]+), ([+-][0-9.]+)\]", out, re.M)
    assert row, out
    assert abs(float(row.group(2)) - sum(diffs) / len(diffs)) <= 5e-4  # printed to 3 decimals
    assert float(row.group(3)) <= float(row.group(2)) <= float(row.group(4))
