"""benchmarks/bench_train.py runs end to end at a tiny size (its numbers are recorded in docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--batch",
    "2",
    "--patch",
    "32",
    "--set",
    "depth=1",
    "--set",
    "channels=4",
    "--set",
    "class_patch=8",
    "--threads",
    "1",
]


def _bench(tmp_path, *args: str) -> dict:
    out = tmp_path / "res.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), *TINY, *args, "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_variant_specs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_train import parse_variant

    assert parse_variant("fd") == ("fd", {"loss": "fd"})
    assert parse_variant("fd-w:loss=fd,fgd_head=window,areas=[3,5,7]") == (
        "fd-w",
        {"loss": "fd", "fgd_head": "window", "areas": "[3,5,7]"},
    )
    assert parse_variant("l1+cl:channels_last=true") == ("l1+cl", {"channels_last": "true"})


def test_step_mode_with_variants_and_both_data_paths(tmp_path):
    res = _bench(
        tmp_path, "--steps", "1", "--variant", "l1", "--variant", "fd", "--variant", "l1cl:channels_last=true",
        "--loader", "--samples", "4",
    )  # fmt: skip
    assert set(res["median_s"]) == {"l1", "fd", "l1cl"} and res["fd_over_l1"] > 0
    for path in ("loader", "device"):
        assert res["loader"][path]["patches_per_s_per_core"] > 0
    assert res["loader"]["device_pyramid_ms_per_batch"] > 0
    assert (
        len(res["load_before"]) == 3 and len(res["load_after"]) == 3
    )  # the load is recorded with the numbers


@pytest.mark.slow
def test_e2e_mode_times_the_real_loop(tmp_path):
    res = _bench(
        tmp_path, "--e2e", "3", "--warmup", "1", "--variant", "l1:pyramid_on=loader",
        "--variant", "l1d:pyramid_on=device",
    )  # fmt: skip
    assert [r["pyramid_on"] for r in res["e2e"].values()] == ["loader", "device"]
    assert all(r["steps_per_s"] > 0 and r["precision"] == "fp32" for r in res["e2e"].values())
