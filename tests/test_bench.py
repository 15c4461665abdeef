"""Benchmark statistics (pooled interval, verdict), the timing loop, backends, and `fgdsr benchmark` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fgdsr.config import load_config
from fgdsr.errors import UserError
from fgdsr.models import build_model
from orchestrator.cli import app
from trt.backends import Backend, Step, choose_backend, torch_threads
from trt.stats import RatioInterval, pooled_interval, round_log_ratios, summarize, verdict
from trt.timing import TimingPlan, time_interleaved

# quick timing for tests; 3 processes (the verdict's minimum) rather than the default 5
FAST = ["--warmup-iters", "1", "--warmup-ms", "0", "--min-iters", "4", "--min-seconds", "0", "--min-rounds", "2",
        "--processes", "3"]  # fmt: skip


def test_summarize_known_values():
    s = summarize(list(range(1, 101)))
    assert (s["median"], s["p90"], s["p99"]) == pytest.approx((50.5, 90.1, 99.01))
    assert s["n"] == 100 and s["min"] == 1 and s["max"] == 100


def test_round_log_ratios_cancel_drift_within_a_round():
    # round 2 runs 2x slower for both models (the machine got busy): its ratio is still 1.1
    base = [[10.0, 10.0], [20.0, 20.0], [10.0, 10.0]]
    cand = [[11.0, 11.0], [22.0, 22.0], [11.0, 11.0]]
    assert round_log_ratios(base, cand) == pytest.approx([math.log(1.1)] * 3)
    lat = pooled_interval([round_log_ratios(base, cand)] * 3)
    assert (lat.ratio, lat.low, lat.high) == pytest.approx((1.1, 1.1, 1.1)) and lat.processes == 3


def _simulate(rng, ratio: float, processes: int, rounds: int, sd_round: float, sd_process: float):
    """Per-round log-ratios: log(ratio) + a per-process offset + per-round noise."""
    return [
        np.log(ratio) + rng.normal(0, sd_process) + rng.normal(0, sd_round, rounds) for _ in range(processes)
    ]


def test_pooled_interval_recovers_a_known_ratio():
    rng = np.random.default_rng(0)
    lat = pooled_interval(_simulate(rng, 1.07, processes=6, rounds=40, sd_round=0.03, sd_process=0.005))
    assert lat.ratio == pytest.approx(1.07, abs=0.01) and lat.low < 1.07 < lat.high
    assert lat.high - lat.low < 0.03 and lat.rounds == 240
    assert lat.round_sd == pytest.approx(0.03, rel=0.15)


def test_interval_coverage_of_a_simulated_null_with_process_drift():
    """3 processes x 10 rounds, each process with its own offset: the 95 % interval covers 1.0 ~95 % of the time.

    Pooling the 30 rounds as if independent (what ignoring the processes would do) covers far less."""
    rng = np.random.default_rng(1)
    hits = naive = 0
    trials = 2000
    for _ in range(trials):
        sim = _simulate(rng, 1.0, processes=3, rounds=10, sd_round=0.02, sd_process=0.01)
        lat = pooled_interval(sim)
        hits += lat.low <= 1.0 <= lat.high
        flat = pooled_interval([np.concatenate(sim)])  # one "process": rounds as the units
        naive += flat.low <= 1.0 <= flat.high
    assert abs(hits / trials - 0.95) < 0.015, hits / trials
    assert naive / trials < 0.85, naive / trials


def _iv(ratio, low, high, processes=3):
    return RatioInterval(ratio, low, high, 0.95, processes, 30, 0.0, 0.0)


def test_verdict_rule_on_hand_made_intervals():
    ok = verdict(_iv(1.0, 0.985, 1.02), 0.03)
    assert ok.no_extra_cost and ok.text.startswith("no extra inference cost")
    # the upper end inside +3 % is not enough: the whole interval must lie within ±3 %
    low_side = verdict(_iv(0.99, 0.96, 1.02), 0.03)
    assert not low_side.no_extra_cost and low_side.kind == "no claim" and "crosses 0.97" in low_side.text
    over = verdict(_iv(1.5, 1.48, 1.52), 0.03)
    assert over.kind == "extra cost" and "+50.0%" in over.text and not over.no_extra_cost
    faster = verdict(_iv(0.8, 0.78, 0.82), 0.03)
    assert faster.kind == "lower cost" and "-20.0%" in faster.text and not faster.no_extra_cost
    straddle = verdict(_iv(1.04, 1.02, 1.06), 0.03)  # crosses +3 %: measured, not claimed
    assert straddle.kind == "no claim" and "crosses 1.03" in straddle.text and "noisy" not in straddle.text
    wide = verdict(_iv(1.0, 0.9, 1.1), 0.03)
    assert "crosses 0.97 and 1.03" in wide.text and "noisy" in wide.text
    single = verdict(_iv(1.0, 0.9, 1.1, processes=1), 0.03)
    assert "one process only" in single.text


class SleepingBackend(Backend):
    """A real (if trivial) backend: sleeps `ms` per step and logs the order of calls."""

    def __init__(self, name: str, ms: float, log: list[str]) -> None:
        self.name, self.ms, self.log = name, ms, log

    def step(self):
        import time

        self.log.append(self.name)
        time.sleep(self.ms / 1e3)
        return Step(self.ms)


def test_time_interleaved_warms_up_alternates_and_stops():
    log: list[str] = []
    backends = {"baseline": SleepingBackend("b", 1.0, log), "candidate": SleepingBackend("c", 1.0, log)}
    plan = TimingPlan(warmup_iters=2, warmup_ms=1e6, warmup_min=2, min_iters=8, min_seconds=1e6, min_rounds=4)
    out = time_interleaved(backends, plan)
    assert log[:4] == ["b", "b", "c", "c"]  # warm-up: 2 iterations each
    timed = log[4:]
    k = len(out["baseline"].e2e[0])
    assert k == 2  # min_iters / min_rounds
    rounds = [timed[i : i + 2 * k] for i in range(0, len(timed), 2 * k)]
    assert rounds[0] == ["b"] * k + ["c"] * k and rounds[1] == ["c"] * k + ["b"] * k  # alternating order
    assert len(out["baseline"].e2e) == len(out["candidate"].e2e) == 4
    assert out["baseline"].compute == [] and out["baseline"].h2d == []  # CPU: no GPU parts


def test_warm_up_runs_at_least_warmup_min_even_when_slow():
    log: list[str] = []
    plan = TimingPlan(warmup_iters=50, warmup_ms=0.0, warmup_min=3, min_iters=1, min_seconds=0, min_rounds=1)
    time_interleaved(
        {"baseline": SleepingBackend("b", 1.0, log), "candidate": SleepingBackend("c", 1.0, log)}, plan
    )
    assert log[:6] == ["b"] * 3 + ["c"] * 3  # a time-only warm-up of 0 ms would have run one cold iteration


def test_choose_backend_is_the_one_choice():
    for name in ("torch", "torch-compile", "onnxruntime"):
        assert choose_backend(name) == (name, "asked for with --backend")
    backend, why = choose_backend("auto")
    assert backend in ("tensorrt", "onnxruntime") and why
    with pytest.raises(UserError, match="--backend: 'tvm'"):
        choose_backend("tvm")


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from fgdsr.checkpoint import save_model_checkpoint

    root = tmp_path_factory.mktemp("bench")
    paths = {}
    for loss in ("l1", "fd"):
        cfg = load_config(None, {"loss": loss, "depth": 2, "channels": 8})
        torch.manual_seed(0)
        paths[loss] = save_model_checkpoint(root / loss, build_model(cfg), cfg)
    return paths


def test_torch_backend_upscales_without_a_numpy_round_trip(checkpoints, monkeypatch):
    """PSNR through the torch backend uses the model itself (tensor in, tensor out) and equals fgdsr.evaluate's."""
    from fgdsr.checkpoint import load_model
    from fgdsr.evaluate import evaluate
    from fgdsr.inference import ModelUpscaler
    from trt.backends import TorchBackend
    from trt.bench import BackendUpscaler

    model, _, _ = load_model(checkpoints["fd"])
    ref = evaluate({"m": ModelUpscaler(model, 4)}, ["builtin-eval"], [4], max_images=2)["results"][0]

    def no_numpy(*_a, **_k):
        raise AssertionError("the torch backend went through numpy")

    monkeypatch.setattr(TorchBackend, "infer", no_numpy)
    up = BackendUpscaler(TorchBackend(model, (1, 1, 8, 8)), 4)
    got = evaluate({"m": up}, ["builtin-eval"], [4], max_images=2)["results"][0]
    assert got["psnr"] == pytest.approx(ref["psnr"], abs=1e-9) and got["ssim"] == pytest.approx(
        ref["ssim"], abs=1e-9
    )


SCHEMA_ROW = {"role", "backend", "precision", "params", "weights", "mult_adds", "latency_ms", "psnr"}


def _check_schema(result: dict, backend: str, processes: int = 3) -> None:
    assert {"rows", "ratios", "verdict", "latency_interval", "method", "machine"} <= set(result)
    assert [r["role"] for r in result["rows"]] == ["baseline", "candidate"]
    for r in result["rows"]:
        assert SCHEMA_ROW <= set(r) and set(r["latency_ms"]) == {"median", "p90", "p99"}
        assert r["backend"] == backend and r["precision"] == "fp32"
        assert r["latency_ms"]["median"] <= r["latency_ms"]["p90"] <= r["latency_ms"]["p99"]
    assert set(result["ratios"]) == {"params", "mult_adds", "latency"}
    base, cand = result["rows"]
    assert result["ratios"]["params"] == pytest.approx(cand["params"] / base["params"])
    assert cand["params"] > base["params"] and cand["mult_adds"] > base["mult_adds"]  # the FD head costs some
    lat = result["latency_interval"]
    assert lat["processes"] == processes and lat["low"] <= lat["ratio"] <= lat["high"]
    assert result["verdict"].startswith(
        ("no extra inference cost", "extra inference cost", "no claim", "lower")
    )


@pytest.mark.slow
def test_cli_benchmark_torch_json(checkpoints):
    before = torch.get_num_threads()
    res = CliRunner().invoke(app, ["benchmark", "--baseline", str(checkpoints["l1"]), "--candidate",
                                   str(checkpoints["fd"]), "--hr-size", "96x64", "--dataset", "none",
                                   "--threads", "1", "--throughput-batch", "3", "--json", *FAST])  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    _check_schema(result, "torch")
    # the throughput mode beside the latency: images/s at batch 3 (CPU: no H2D/D2H parts)
    assert all(r["throughput_batch_ips"] > 0 and r["h2d_ms"] is None for r in result["rows"])
    assert result["method"]["lr_input"] == [1, 1, 16, 24] and result["method"]["interleaved"]
    assert result["rows"][0]["threads"] == 1 and torch.get_num_threads() == before  # restored
    # params/Mult-Adds are trt.complexity's numbers for the same configs at the same HR size
    from trt.complexity import complexity
    from trt.shapes import Size

    counts = complexity(str(checkpoints["fd"]), hr_size=Size(height=64, width=96)).counts
    assert (result["rows"][1]["params"], result["rows"][1]["mult_adds"]) == (
        counts.params,
        counts.mult_adds_true,
    )


@pytest.fixture(scope="module")
def ort_report(checkpoints, tmp_path_factory):
    """One onnxruntime benchmark from checkpoints (exported on the fly, kept in <out>/models), with --profile."""
    out = tmp_path_factory.mktemp("ort") / "report"
    res = CliRunner().invoke(app, ["benchmark", "--baseline", str(checkpoints["l1"]), "--candidate",
                                   str(checkpoints["fd"]), "--backend", "onnxruntime", "--hr-size", "96x64",
                                   "--dataset", "none", "--profile", "--out", str(out), *FAST])  # fmt: skip
    assert res.exit_code == 0, res.output
    return out, res


@pytest.mark.slow
def test_cli_benchmark_onnxruntime_table_profile_and_report(ort_report):
    out, res = ort_report
    assert "fgdsr benchmark" in res.stdout and "verdict:" in res.stdout and "latency median ms" in res.stdout
    assert "where the time goes" in res.stdout
    result = json.loads((out / "benchmark.json").read_text())
    _check_schema(result, "onnxruntime")
    md = (out / "benchmark.md").read_text()
    assert result["verdict"] in md and "| latency median ms |" in md and "| FD head |" in md
    groups = {role: p["groups_ms"] for role, p in result["profile"].items()}
    assert (
        groups["baseline"]["FD head"] == 0 == groups["baseline"]["Class-Module"]
        and groups["baseline"]["trunk"] > 0
    )
    assert all(groups["candidate"][g] > 0 for g in ("trunk", "FD head", "Class-Module"))
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "models").glob("*.onnx")) == [
        "baseline-fp32.onnx",
        "candidate-fp32.onnx",
    ]


@pytest.mark.slow
def test_benchmark_onnx_files_and_mlflow(ort_report, tmp_path, monkeypatch):
    """.onnx files are benchmarked as given; --tracking-uri logs one MLflow run with the ratios (bench_tracking)."""
    import mlflow

    models = ort_report[0] / "models"
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = CliRunner().invoke(app, ["benchmark", "--baseline", str(models / "baseline-fp32.onnx"), "--candidate",
                                   str(models / "candidate-fp32.onnx"), "--backend", "onnxruntime", "--hr-size",
                                   "lr:20x12", "--dataset", "none", "--json", "--tracking-uri", uri, *FAST,
                                   "--processes", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    _check_schema(result, "onnxruntime", processes=1)
    assert result["method"]["lr_input"] == [1, 1, 12, 20] and "one process only" in result["verdict"]
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(result["mlflow_run_id"])
    assert run.data.metrics["ratio_latency"] == pytest.approx(result["ratios"]["latency"])
    assert run.data.tags["verdict"] == result["verdict"] and run.info.status == "FINISHED"


@pytest.mark.slow
def test_benchmark_bare_defaults_without_data_sets(checkpoints, tmp_path, monkeypatch):
    """Only --baseline/--candidate on a machine with no data sets: PSNR on builtin-eval, and it says so."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("FGDSR_DATA_ROOT", str(empty))
    res = CliRunner().invoke(app, ["benchmark", "--baseline", str(checkpoints["l1"]), "--candidate",
                                   str(checkpoints["fd"]), "--hr-size", "lr:16x12", *FAST])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (
        "Set5 not found" in res.output
        and "builtin-eval" in res.output
        and "PSNR dB (builtin-eval)" in res.output
    )
    res = CliRunner().invoke(app, ["benchmark", "--baseline", str(checkpoints["l1"]), "--candidate",
                                   str(checkpoints["fd"]), "--dataset", "Set5", *FAST])  # fmt: skip
    assert res.exit_code == 2 and "Set5" in res.output  # asked for by name: an error, not a silent fallback


def test_benchmark_bad_inputs_are_one_line(checkpoints, tmp_path):
    runner = CliRunner()
    args = ["benchmark", "--baseline", str(checkpoints["l1"]), "--candidate", str(checkpoints["fd"])]
    for extra, msg in [
        (["--backend", "tvm"], "--backend"),
        (["--scale", "2"], "is a x4 model"),
        (["--hr-size", "wide"], "--hr-size"),
        (["--precision", "int8"], "--precision"),
        (["--processes", "0"], "--processes"),
        (["--precision", "fp16", "--device", "cpu", "--processes", "1"], "fp16"),  # raised inside the worker
    ]:
        res = runner.invoke(app, [*args, "--dataset", "none", *FAST, *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert msg in res.output and res.output.count("\n") == 1, res.output
    res = runner.invoke(app, ["benchmark", "--baseline", str(tmp_path / "nope"), "--candidate", "x/y"])
    assert res.exit_code == 2 and "neither an existing" in res.output


def test_cpu_peak_memory_sees_an_allocation():
    from trt.backends import cpu_peak_extra_mb

    # 96 MiB: above glibc's largest mmap threshold (32 MiB), so fresh pages, not memory freed by earlier tests
    mb = cpu_peak_extra_mb(lambda: np.ones(96 * 2**20 // 8).sum())
    if mb is None:
        pytest.skip("no /proc/self/clear_refs (not Linux)")
    assert 90 < mb < 200


@pytest.mark.slow
def test_psnr_through_onnxruntime_matches_torch(checkpoints, ort_report):
    from fgdsr.checkpoint import load_model
    from fgdsr.evaluate import evaluate
    from fgdsr.inference import ModelUpscaler
    from trt.backends import OrtBackend
    from trt.bench import BackendUpscaler

    model, _, _ = load_model(checkpoints["l1"])
    ref = evaluate({"m": ModelUpscaler(model, 4)}, ["builtin-eval"], [4], max_images=2)["results"][0]
    ort = OrtBackend(ort_report[0] / "models" / "baseline-fp32.onnx", (1, 1, 8, 8))
    got = evaluate({"m": BackendUpscaler(ort, 4)}, ["builtin-eval"], [4], max_images=2)["results"][0]
    assert got["psnr"] == pytest.approx(ref["psnr"], abs=0.01)


@pytest.mark.slow
def test_cli_benchmark_torch_compile_matches_eager(checkpoints):
    """torch-compile (real inductor): the JSON schema, and the compiled fd model (traced head: conv + prior) gives
    eager's output (GEMM head) up to argmax ties."""
    res = CliRunner().invoke(app, ["benchmark", "--baseline", str(checkpoints["l1"]), "--candidate",
                                   str(checkpoints["fd"]), "--backend", "torch-compile", "--hr-size", "96x64",
                                   "--dataset", "none", "--json", *FAST, "--processes", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    _check_schema(json.loads(res.stdout), "torch-compile", processes=1)

    from fgdsr.checkpoint import load_model

    model, _, _ = load_model(checkpoints["fd"])
    with torch.no_grad():
        model.heads[str(model.levels - 1)].cls.weight.normal_(
            0, 50.0
        )  # let the head move bins (tiny features)
        x = torch.rand(2, 1, 16, 24, generator=torch.Generator().manual_seed(3))
        eager = model(x)
        compiled = torch.compile(model, dynamic=False)(x)
    differ = ((eager - compiled).abs() > 1e-4).float().mean().item()
    assert differ <= 1e-3, differ
