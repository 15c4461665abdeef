"""`fgdsr pipeline`: config, backend choice, report pieces, figures, and one small end-to-end run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fgdsr.errors import UserError
from orchestrator import figures, pipeline, report


def test_demo_config_is_the_default_and_valid():
    cfg = pipeline.load_pipeline_config(None)
    assert Path(cfg.source).name == "demo.yaml"
    assert Path(cfg.train).name == "tune-demo.yaml" and Path(cfg.space).name == "space.yaml"
    assert cfg.tune["gpus"] == 0 and cfg.tune["num_samples"] >= 2
    assert cfg.eval_datasets == ["builtin-eval"]
    cfg2 = pipeline.load_pipeline_config(None, overrides={"max_steps": "7"})
    assert cfg2.overrides["max_steps"] == "7"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train: tune-demo.yaml\nbogus: 1\n", "bogus"),
        ("train: nope.yaml\n", "nope.yaml"),
        ("set: {lr: 1}\n", "'train'"),
        ("train: tune-demo.yaml\nset: {no_such_field: 1}\n", "no_such_field"),
        ("train: tune-demo.yaml\ntune: {gpuz: 1}\n", "gpuz"),
        ("train: tune-demo.yaml\nfigures: {crop: 2}\n", "crop"),
        ("train: [\n", "not valid YAML"),
    ],
)
def test_bad_pipeline_config_is_one_line(tmp_path, text, needle):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    with pytest.raises(UserError) as e:
        pipeline.load_pipeline_config(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_backend_choice_says_why():
    import torch

    try:
        import tensorrt  # noqa: F401

        have_trt = True
    except ImportError:
        have_trt = False
    backend, why = pipeline.choose_backend("auto")
    if have_trt and torch.cuda.is_available():
        assert backend == "tensorrt"
    else:
        assert backend == "onnxruntime" and ("TensorRT" in why or "GPU" in why)
        with pytest.raises(UserError, match="--backend tensorrt"):
            pipeline.choose_backend("tensorrt")
    assert pipeline.choose_backend("torch") == ("torch", "asked for with --backend")


def test_tables_render_known_rows():
    trials = [
        {"trial_id": "a1", "variant": "l1", "alpha": 1.0, "beta": 0.1, "bins": 32, "lr": 1e-3, "steps": 200,
         "psnr": 25.123, "ssim": 0.71234, "state": "TERMINATED"},
        {"trial_id": "b2", "variant": "fd", "alpha": 1.5, "beta": 0.05, "bins": 16, "lr": 2e-3, "steps": 200,
         "psnr": 25.5, "ssim": 0.72, "state": "TERMINATED"},
    ]  # fmt: skip
    text = report.md_table(*report.trials_table(trials))
    assert "| a1 | l1 | — | — | — | 1.0e-03 | 200 | 25.12 | 0.7123 | TERMINATED |" in text
    assert "| b2 | fd | 1.500 | 0.050 | 16 | 2.0e-03 | 200 | 25.50 | 0.7200 | TERMINATED |" in text
    bench = {"rows": [{"role": "baseline", "backend": "onnxruntime", "precision": "fp32", "params": 57_281,
                       "mult_adds": 52_700_000_000, "latency_ms": {"median": 1.0, "p90": 1.5, "p99": 2.0},
                       "psnr": 30.0}],
             "ratios": {"params": 1.25, "mult_adds": 1.5, "latency": 1.1}}  # fmt: skip
    btext = report.md_table(*report.benchmark_table(bench))
    assert "| baseline | onnxruntime | fp32 | 57.3 K | 52.70 G | 1.000 | 1.500 | 2.000 | 30.00 |" in btext
    assert "| candidate / baseline |  |  | 1.250× | 1.500× | 1.100× |" in btext


def test_linear_fit_known_line():
    fit = figures.linear_fit([1, 2, 3, 4], [3, 5, 7, 9])
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(1.0)
    assert fit["r"] == pytest.approx(1.0) and fit["n"] == 4
    assert np.isnan(figures.linear_fit([1], [2])["slope"])


def test_best_crop_box_finds_the_gain_and_the_loss():
    a = np.zeros((50, 60))
    b = np.zeros((50, 60))
    a[10:20, 30:40] = 5.0  # the baseline is wrong here: FGD gains
    b[35:45, 2:12] = 3.0  # FGD is wrong here: FGD loses
    assert figures.best_crop_box(a, b, 10, 1.0) == (10, 30, 10)
    assert figures.best_crop_box(a, b, 10, -1.0) == (35, 2, 10)
    assert figures.best_crop_box(a, b, 500, 1.0)[2] == 50  # the crop shrinks to the image


def test_figures_are_written(tmp_path):
    from PIL import Image

    p = figures.plot_psnr_vs_step(
        {"t1 (l1)": [(10, 20.0), (20, 21.0)], "t2 (fd)": [(10, 20.5)]}, tmp_path / "a.png"
    )
    assert Image.open(p).size[0] > 100
    imgs = [{"entropy": e, "psnr_baseline": 30 - e, "psnr_fgd": 30 - e + 0.1 * e} for e in (5.0, 6.0, 7.0)]
    fits = figures.plot_entropy_analysis(imgs, tmp_path / "b.png")
    assert fits["delta"]["slope"] == pytest.approx(0.1) and fits["baseline"]["slope"] == pytest.approx(-1.0)
    crop = np.zeros((8, 8, 3), np.uint8)
    row = {"title": "x", "crops": {"HR": crop, "bicubic": crop, "baseline": crop, "FGD": crop},
           "psnr": {"HR": None, "bicubic": 20.0, "baseline": 21.0, "FGD": 22.0}}  # fmt: skip
    assert Image.open(figures.crop_grid([row, row], tmp_path / "c.png")).size[1] > 100
    assert not list(tmp_path.glob("*.tmp-*"))


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_pipeline_small_end_to_end(tmp_path, monkeypatch):
    """Tune (2 trials) → export → ORT benchmark → evaluate → report; the report, figures and MLflow agree."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = pipeline.load_pipeline_config(
        None,
        overrides={
            "max_steps": 30,
            "val_every": 15,
            "patch_size": 32,
            "class_patch": 8,
            "val_max_images": 1,
            "batch_size": 4,
        },
    )
    cfg.tune.update(num_samples=2)
    cfg.bench.update(hr_size="64x64", min_iters=5, min_time_s=0.2, warmup_ms=20)
    cfg.crop = 24
    # a small evaluation set (three 96x96 crops of built-in photos) under a data root keeps the test short
    from PIL import Image

    from fgdsr.data.datasets import resolve_dataset

    (tmp_path / "data" / "mini" / "HR").mkdir(parents=True)
    for p in resolve_dataset("builtin-eval").paths[:3]:
        Image.open(p).convert("RGB").crop((40, 40, 136, 136)).save(
            tmp_path / "data" / "mini" / "HR" / f"{p.stem}.png"
        )
    out = tmp_path / "run"
    opts = pipeline.PipelineOptions(config=cfg, out=out, tracking_uri=uri, quiet=True, eval_datasets=["mini"],
                                    data_root=str(tmp_path / "data"))  # fmt: skip
    s = pipeline.run_pipeline(opts)

    # files
    text = (out / "report.md").read_text()
    for name in ("psnr_vs_step.png", "fig1_entropy.png", "fig5_crops.png"):
        assert (out / "figures" / name).stat().st_size > 1000
        assert f"figures/{name}" in text
    assert (out / "benchmark" / "benchmark.json").is_file()
    if s["backend"] == "onnxruntime":
        assert (out / "models" / "fgd.onnx").is_file() and (out / "models" / "baseline.onnx").is_file()
    else:  # trt.export's parity check can refuse a model (a near-tied FD pixel): the pipeline says so, goes on
        assert s["backend"] == "torch" and "ONNX export failed" in s["backend_reason"]
        assert "fell back to torch" in text
    assert json.loads((out / "pipeline.json").read_text())["parent_run_id"] == s["parent_run_id"]
    for heading in (
        "## Trials",
        "## Table 2 style",
        "## Benchmark",
        "## Fig. 1 analysis",
        "## Fig. 5 analysis",
    ):
        assert heading in text
    assert "verdict" in s["benchmark"] and s["benchmark"]["verdict"] in text

    # trials: the report's table == MLflow's child runs (one per trial, best val PSNR equal)
    c = MlflowClient(uri)
    children = c.search_runs([s["experiment_id"]], f"tags.`mlflow.parentRunId` = '{s['parent_run_id']}'")
    assert len(children) == len(s["trials"]) == 2
    assert {t["variant"] for t in s["trials"]} == {"l1", "fd"}
    by_run = {r.info.run_id: r for r in children}
    for t in s["trials"]:
        run = by_run[t["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        best = max(m.value for m in c.get_metric_history(run.info.run_id, "val_psnr"))
        assert t["psnr"] == pytest.approx(best, abs=1e-6)
        assert f"| {t['trial_id']} | {t['variant']} |" in text
        assert f"{t['psnr']:.2f}" in text

    # Table 2 rows == fgdsr.evaluate's means; ΔPSNR per image == FGD − baseline
    rows = {r["role"]: r for r in s["table2"]}
    ev = {(r["method"], r["dataset"]): r for r in s["evaluation"]["results"]}
    for role in ("bicubic", "baseline", "fgd"):
        v = rows[role]["sets"]["mini"]
        assert v["psnr"] == ev[(role, "mini")]["psnr"]
        assert f"{v['psnr']:.2f} / {v['ssim']:.4f}" in text
    mean_base = np.mean([i["psnr_baseline"] for i in s["images"]])
    assert len(s["images"]) == 3
    assert mean_base == pytest.approx(rows["baseline"]["sets"]["mini"]["psnr"], abs=1e-6)
    assert s["benchmark"]["rows"][0]["psnr"] == pytest.approx(
        rows["baseline"]["sets"]["mini"]["psnr"], abs=0.01
    )
    assert all(i["delta"] == pytest.approx(i["psnr_fgd"] - i["psnr_baseline"]) for i in s["images"])
    assert s["fig5"][0]["delta"] == max(i["delta"] for i in s["images"])

    # every artefact is on the parent run
    arts = {a.path for a in c.list_artifacts(s["parent_run_id"], "pipeline")}
    assert {"pipeline/report.md", "pipeline/pipeline.json", "pipeline/figures", "pipeline/benchmark"} <= arts
    figs = {a.path for a in c.list_artifacts(s["parent_run_id"], "pipeline/figures")}
    assert "pipeline/figures/fig5_crops.png" in figs
    parent = c.get_run(s["parent_run_id"])
    assert parent.data.tags["pipeline.fgd_trial"] == s["best"]["fgd"]["trial_id"]
    assert parent.data.metrics["pipeline_fgd_mini_psnr"] == pytest.approx(rows["fgd"]["sets"]["mini"]["psnr"])
    assert re.search(r"sweep parent run `[0-9a-f]{32}`", text)


def test_cli_bad_input_is_one_line(tmp_path):
    import subprocess
    import sys

    for args, needle in (
        (["pipeline", "--backend", "foo"], "--backend"),
        (["pipeline", "--config", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["pipeline", "--set", "no_such_field=1"], "no_such_field"),
    ):
        p = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, p.stderr)
