"""Benchmark statistics, the interleaved timing loop, the verdict, and `fgdsr benchmark` end to end on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fgdsr.config import load_config
from fgdsr.models import build_model
from orchestrator.cli import app
from trt.backends import Backend
from trt.bench import TimingPlan, time_interleaved
from trt.stats import ratio_interval, summarize, verdict

FAST = [
    "--warmup-iters",
    "1",
    "--warmup-ms",
    "0",
    "--min-iters",
    "6",
    "--min-seconds",
    "0",
    "--min-rounds",
    "3",
]


def test_summarize_known_values():
    s = summarize(list(range(1, 101)))
    assert (s["median"], s["p90"], s["p99"]) == pytest.approx((50.5, 90.1, 99.01))
    assert s["n"] == 100 and s["min"] == 1 and s["max"] == 100


def test_ratio_interval_exact_and_paired():
    base = [[10.0, 10.0, 10.0]] * 6
    lat = ratio_interval(base, [[12.0, 12.0, 12.0]] * 6)
    assert lat["ratio"] == pytest.approx(1.2) and lat["low"] == pytest.approx(1.2)
    assert lat["high"] == pytest.approx(1.2) and lat["round_iqr"] == 0 and lat["rounds"] == 6
    # drift that hits both models alike (rounds 2x slower) leaves the ratio and a tight interval
    drift = [[10.0 * (1 + r % 2)] * 3 for r in range(8)]
    lat = ratio_interval(drift, [[1.1 * t for t in r] for r in drift])
    assert lat["ratio"] == pytest.approx(1.1) and lat["high"] - lat["low"] < 0.05


def test_verdict_rule():
    ok = verdict({"ratio": 1.0, "low": 0.99, "high": 1.02}, 0.03)
    assert ok["no_extra_cost"] and ok["text"].startswith("no extra inference cost")
    over = verdict({"ratio": 1.5, "low": 1.48, "high": 1.52}, 0.03)
    assert not over["no_extra_cost"] and "+50.0%" in over["text"] and "noisy" not in over["text"]
    # a ratio of 1.0 with an interval reaching +5 % is not "no extra cost" (the spread exceeds the tolerance)
    wide = verdict({"ratio": 1.0, "low": 0.9, "high": 1.05}, 0.03)
    assert not wide["no_extra_cost"] and wide["text"].startswith("no claim: latency +0.0% measured")
    assert "noisy" in wide["text"]
    tight = verdict({"ratio": 1.04, "low": 1.02, "high": 1.06}, 0.03)  # crosses +3 %, but not noisy
    assert tight["text"].startswith("no claim") and "noisy" not in tight["text"]


class CountingBackend(Backend):
    """A real (if trivial) backend: sleeps `ms` per step and logs the order of calls."""

    def __init__(self, name: str, ms: float, log: list[str]) -> None:
        self.name, self.ms, self.log = name, ms, log

    def step(self):
        import time

        self.log.append(self.name)
        time.sleep(self.ms / 1e3)
        return self.ms, None


def test_time_interleaved_alternates_and_stops():
    log: list[str] = []
    backends = {"baseline": CountingBackend("b", 1.0, log), "candidate": CountingBackend("c", 1.0, log)}
    plan = TimingPlan(
        warmup_iters=2, warmup_ms=1e6, min_iters=8, min_seconds=1e6, min_rounds=4, target_rounds=4
    )
    out = time_interleaved(backends, plan)
    assert log[:4] == ["b", "b", "c", "c"]  # warm-up: 2 iterations each
    timed = log[4:]
    k = len(out["baseline"]["e2e"][0])
    assert k == 2  # min_iters / target_rounds
    rounds = [timed[i : i + 2 * k] for i in range(0, len(timed), 2 * k)]
    assert rounds[0] == ["b"] * k + ["c"] * k and rounds[1] == ["c"] * k + ["b"] * k  # alternating order
    assert len(out["baseline"]["e2e"]) == len(out["candidate"]["e2e"]) == 4  # 8 iterations = 4 rounds of 2


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


SCHEMA_ROW = {"role", "backend", "precision", "params", "weights", "mult_adds", "latency_ms", "psnr"}


def _check_schema(result: dict, backend: str) -> None:
    assert {"rows", "ratios", "verdict"} <= set(result)
    assert [r["role"] for r in result["rows"]] == ["baseline", "candidate"]
    for r in result["rows"]:
        assert SCHEMA_ROW <= set(r) and set(r["latency_ms"]) == {"median", "p90", "p99"}
        assert r["backend"] == backend and r["precision"] == "fp32"
        assert r["latency_ms"]["median"] <= r["latency_ms"]["p90"] <= r["latency_ms"]["p99"]
    assert set(result["ratios"]) == {"params", "mult_adds", "latency"}
    base, cand = result["rows"]
    assert result["ratios"]["params"] == pytest.approx(cand["params"] / base["params"])
    assert cand["params"] > base["params"] and cand["mult_adds"] > base["mult_adds"]  # the FD head costs some
    assert result["verdict"].startswith(("no extra inference cost", "extra inference cost", "no claim"))


@pytest.mark.slow
def test_cli_benchmark_torch_json(checkpoints):
    res = CliRunner().invoke(app, ["benchmark", "--baseline", str(checkpoints["l1"]), "--candidate",
                                   str(checkpoints["fd"]), "--hr-size", "96x64", "--dataset", "none",
                                   "--json", *FAST])  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    _check_schema(result, "torch")
    assert result["method"]["lr_input"] == [1, 1, 16, 24] and result["method"]["interleaved"]
    assert result["rows"][0]["threads"] == torch.get_num_threads()
    # params/Mult-Adds are trt.complexity's numbers for the same configs at the same HR size
    from trt.complexity import complexity

    record, _ = complexity(str(checkpoints["fd"]), hr_size=(96, 64))
    assert (
        result["rows"][1]["params"] == record["params"]
        and result["rows"][1]["mult_adds"] == record["mult_adds"]
    )


@pytest.fixture(scope="module")
def ort_report(checkpoints, tmp_path_factory):
    """One onnxruntime benchmark from checkpoints (exported on the fly, kept in <out>/models)."""
    out = tmp_path_factory.mktemp("ort") / "report"
    res = CliRunner().invoke(app, ["benchmark", "--baseline", str(checkpoints["l1"]), "--candidate",
                                   str(checkpoints["fd"]), "--backend", "onnxruntime", "--hr-size", "96x64",
                                   "--dataset", "none", "--out", str(out), *FAST])  # fmt: skip
    assert res.exit_code == 0, res.output
    return out, res


@pytest.mark.slow
def test_cli_benchmark_onnxruntime_table_and_report(ort_report):
    out, res = ort_report
    assert "fgdsr benchmark" in res.stdout and "verdict:" in res.stdout and "latency median ms" in res.stdout
    result = json.loads((out / "benchmark.json").read_text())
    _check_schema(result, "onnxruntime")
    md = (out / "benchmark.md").read_text()
    assert result["verdict"] in md and "| latency median ms |" in md
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "models").glob("*.onnx")) == [
        "baseline-fp32.onnx",
        "candidate-fp32.onnx",
    ]


@pytest.mark.slow
def test_benchmark_onnx_files_and_mlflow(ort_report, tmp_path, monkeypatch):
    """.onnx files are benchmarked as given; --tracking-uri logs one MLflow run with the ratios."""
    import mlflow

    models = ort_report[0] / "models"
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = CliRunner().invoke(app, ["benchmark", "--baseline", str(models / "baseline-fp32.onnx"), "--candidate",
                                   str(models / "candidate-fp32.onnx"), "--backend", "onnxruntime", "--hr-size",
                                   "lr:20x12", "--dataset", "none", "--json", "--tracking-uri", uri, *FAST])  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    _check_schema(result, "onnxruntime")
    assert result["method"]["lr_input"] == [1, 1, 12, 20]
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(result["mlflow_run_id"])
    assert run.data.metrics["ratio_latency"] == pytest.approx(result["ratios"]["latency"])
    assert run.data.tags["verdict"] == result["verdict"]


def test_benchmark_bad_inputs_are_one_line(checkpoints, tmp_path):
    runner = CliRunner()
    args = ["benchmark", "--baseline", str(checkpoints["l1"]), "--candidate", str(checkpoints["fd"])]
    for extra, msg in [
        (["--backend", "tvm"], "--backend"),
        (["--scale", "2"], "is a x4 model"),
        (["--hr-size", "wide"], "--hr-size"),
        (["--precision", "int8"], "--precision"),
        (["--precision", "fp16", "--device", "cpu"], "fp16"),
    ]:
        res = runner.invoke(app, [*args, "--dataset", "none", *FAST, *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert msg in res.output and res.output.count("\n") == 1, res.output
    res = runner.invoke(app, ["benchmark", "--baseline", str(tmp_path / "nope"), "--candidate", "x/y"])
    assert res.exit_code == 2 and "neither an existing" in res.output


def test_cpu_peak_memory_sees_an_allocation():
    from trt.backends import cpu_peak_extra_mb

    mb = cpu_peak_extra_mb(lambda: np.ones(16 * 2**20 // 8).sum())  # a 16 MiB array
    if mb is None:
        pytest.skip("no /proc/self/clear_refs (not Linux)")
    assert 12 < mb < 64


@pytest.mark.slow
def test_psnr_through_the_backend(checkpoints, ort_report):
    """PSNR via the torch backend = fgdsr.evaluate on the model itself; via ONNX Runtime within 0.01 dB."""
    from fgdsr.checkpoint import load_model
    from fgdsr.evaluate import evaluate
    from fgdsr.inference import ModelUpscaler
    from trt.backends import OrtBackend, TorchBackend
    from trt.bench import BackendUpscaler, accuracy

    model, _, _ = load_model(checkpoints["l1"])
    ref = evaluate({"model": ModelUpscaler(model, 4)}, ["builtin-eval"], [4], max_images=2)["results"][0]
    shape = (1, 1, 8, 8)
    via_torch = accuracy(
        BackendUpscaler(TorchBackend(model, shape), 4), "builtin-eval", 4, None, max_images=2
    )
    assert via_torch["psnr"] == pytest.approx(ref["psnr"], abs=1e-9)
    assert via_torch["ssim"] == pytest.approx(ref["ssim"], abs=1e-9)
    ort = OrtBackend(ort_report[0] / "models" / "baseline-fp32.onnx", shape)
    via_ort = accuracy(BackendUpscaler(ort, 4), "builtin-eval", 4, None, max_images=2)
    assert via_ort["psnr"] == pytest.approx(ref["psnr"], abs=0.01)


@pytest.mark.slow
def test_cli_benchmark_torch_compile_matches_eager(checkpoints):
    """torch-compile (real inductor): the JSON schema, and the compiled fd model (traced head: conv + prior) gives
    eager's output (GEMM head) up to argmax ties."""
    res = CliRunner().invoke(app, ["benchmark", "--baseline", str(checkpoints["l1"]), "--candidate",
                                   str(checkpoints["fd"]), "--backend", "torch-compile", "--hr-size", "96x64",
                                   "--dataset", "none", "--json", *FAST])  # fmt: skip
    assert res.exit_code == 0, res.output
    _check_schema(json.loads(res.stdout), "torch-compile")

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
