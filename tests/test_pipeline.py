"""`fgdsr pipeline`: config, backend choice, report pieces, figures, and one small end-to-end run."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from fgdsr.errors import UserError
from orchestrator import figures, pipeline, report
from orchestrator.pipeline_config import load_pipeline_config
from orchestrator.trials import TrialSummary


def test_demo_config_is_the_default_and_valid():
    cfg = load_pipeline_config(None)
    assert Path(cfg.source).name == "demo.yaml"
    assert Path(cfg.train).name == "tune-demo.yaml" and Path(cfg.space).name == "space.yaml"
    assert cfg.tune["gpus"] == 0 and cfg.tune["num_samples"] >= 2
    # selection on builtin-val (held out of the training pool), the report scores builtin-eval: disjoint
    assert cfg.eval_datasets == ("builtin-eval",) and cfg.overrides["val_dataset"] == "builtin-val"
    assert cfg.variants == ("l1", "fd")
    cfg2 = load_pipeline_config(None, overrides={"max_steps": "7"})
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
        load_pipeline_config(p)
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


def _trial(trial_id, variant, config, psnr, ssim, state="TERMINATED", steps=200, **kw) -> TrialSummary:
    return TrialSummary(trial_id=trial_id, name=trial_id, config=config, variant=variant, state=state,
                        steps=steps, val_psnr=psnr, val_ssim=ssim, best_val_psnr=psnr, best_val_ssim=ssim,
                        best_step=steps, checkpoint=kw.get("checkpoint"), mlflow_run_id=None)  # fmt: skip


def test_tables_render_known_rows():
    trials = [
        _trial(
            "a1", "l1", {"loss": "l1", "alpha": 1.0, "beta": 0.1, "bins": 32, "lr": 1e-3}, 25.123, 0.71234
        ),
        _trial("b2", "fd", {"loss": "fd", "alpha": 1.5, "beta": 0.05, "bins": 16, "lr": 2e-3}, 25.5, 0.72),
    ]
    text = report.md_table(*report.trials_table(trials))
    assert "| a1 | l1 | — | — | — | 1.0e-03 | 200 | 25.12 | 0.7123 | TERMINATED |" in text
    assert "| b2 | fd | 1.500 | 0.050 | 16 | 2.0e-03 | 200 | 25.50 | 0.7200 | TERMINATED |" in text


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
    ent = [5.0, 6.0, 7.0]
    fits = figures.plot_entropy_analysis(
        ent, [30 - e for e in ent], [30 - e + 0.1 * e for e in ent], tmp_path / "b.png"
    )
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
    cfg = load_pipeline_config(
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
    bench = {**cfg.bench, "hr_size": "64x64", "min_iters": 5, "min_time_s": 0.2, "warmup_ms": 20}
    cfg = dataclasses.replace(
        cfg, tune={**cfg.tune, "num_samples": 1}, bench=bench, crop=24
    )  # 1 slot: l1, fd
    # a small evaluation set (three 96x96 crops of built-in photos) under a data root keeps the test short
    from PIL import Image

    from fgdsr.data.datasets import resolve_dataset

    (tmp_path / "data" / "mini" / "HR").mkdir(parents=True)
    for p in resolve_dataset("builtin-eval").paths[:3]:
        Image.open(p).convert("RGB").crop((40, 40, 136, 136)).save(
            tmp_path / "data" / "mini" / "HR" / f"{p.stem}.png"
        )
    out = tmp_path / "run"
    opts = pipeline.PipelineOptions(config=cfg, out=out, tracking_uri=uri, quiet=True, eval_datasets=("mini",),
                                    data_root=str(tmp_path / "data"))  # fmt: skip
    s = pipeline.run_pipeline(opts)
    d, ev = s.deployment, s.evaluation

    # files
    text = (out / "report.md").read_text()
    for name in ("psnr_vs_step.png", "fig1_entropy.png", "fig5_crops.png"):
        assert (out / "figures" / name).stat().st_size > 1000
        assert f"figures/{name}" in text
    assert (out / "benchmark" / "benchmark.json").is_file()
    if d.backend == "onnxruntime":
        assert (out / "models" / "fd.onnx").is_file() and (out / "models" / "l1.onnx").is_file()
    else:  # trt.export's parity check can refuse a model (a near-tied FD pixel): the pipeline says so, goes on
        assert d.backend == "torch" and "ONNX export failed" in d.reason
        assert "fell back to torch" in text
    assert json.loads((out / "pipeline.json").read_text())["sweep"]["parent_run_id"] == s.sweep.parent_run_id
    for heading in (
        "## Trials",
        "## Table 2 style",
        "## Benchmark",
        "## Fig. 1 analysis",
        "## Fig. 5 analysis",
    ):
        assert heading in text
    assert "verdict" in d.benchmark and d.benchmark["verdict"] in text
    # selected on builtin-val, scored on mini: the report says which images did which
    assert s.selection.val_images and not s.selection.overlap and "no image is in both" in text

    # trials: the report's table == MLflow's child runs (one per trial, best val PSNR equal)
    c = MlflowClient(uri)
    trials = s.sweep.trials
    children = c.search_runs(
        [s.sweep.experiment_id], f"tags.`mlflow.parentRunId` = '{s.sweep.parent_run_id}'"
    )
    assert len(children) == len(trials) == 2
    assert {t.variant for t in trials} == {"l1", "fd"}
    # paired: the same sampled settings for both variants of the slot, only the loss differs
    assert [{k: v for k, v in t.config.items() if k != "loss"} for t in trials].count(
        {k: v for k, v in trials[0].config.items() if k != "loss"}) == 2  # fmt: skip
    by_run = {r.info.run_id: r for r in children}
    for t in trials:
        run = by_run[t.mlflow_run_id]
        assert run.info.status == "FINISHED"
        best = max(m.value for m in c.get_metric_history(run.info.run_id, "val_psnr"))
        assert t.best_val_psnr == pytest.approx(best, abs=1e-6)
        assert f"| {t.trial_id} | {t.variant} |" in text
        assert f"{t.best_val_psnr:.2f}" in text

    # Table 2 rows == fgdsr.evaluate's means; ΔPSNR per image == FGD − baseline
    rows = {r["variant"]: r for r in ev.table2}
    res = {(r["method"], r["dataset"]): r for r in ev.result["results"]}
    for method in ("bicubic", "l1", "fd"):
        v = rows[method]["sets"]["mini"]
        assert v["psnr"] == res[(method, "mini")]["psnr"]
        assert f"{v['psnr']:.2f} / {v['ssim']:.4f}" in text
    mean_base = np.mean([i["psnr"]["l1"] for i in ev.images])
    assert len(ev.images) == 3
    assert mean_base == pytest.approx(rows["l1"]["sets"]["mini"]["psnr"], abs=1e-6)
    assert d.benchmark["rows"][0]["psnr"] == pytest.approx(rows["l1"]["sets"]["mini"]["psnr"], abs=0.01)
    assert all(i["delta"] == pytest.approx(i["psnr"]["fd"] - i["psnr"]["l1"]) for i in ev.images)
    assert s.figures.fig5[0]["delta"] == max(i["delta"] for i in ev.images)

    # every artefact is on the parent run
    arts = {a.path for a in c.list_artifacts(s.sweep.parent_run_id, "pipeline")}
    assert {"pipeline/report.md", "pipeline/pipeline.json", "pipeline/figures", "pipeline/benchmark"} <= arts
    figs = {a.path for a in c.list_artifacts(s.sweep.parent_run_id, "pipeline/figures")}
    assert "pipeline/figures/fig5_crops.png" in figs
    parent = c.get_run(s.sweep.parent_run_id)
    assert parent.data.tags["pipeline.fgd_trial"] == s.comparison.best_fgd.trial_id
    assert parent.data.metrics["pipeline_fd_mini_psnr"] == pytest.approx(rows["fd"]["sets"]["mini"]["psnr"])
    assert re.search(r"sweep parent run `[0-9a-f]{32}`", text)
    assert (
        f"#/experiments/{s.sweep.experiment_id}?workflowType=machine_learning" in text
    )  # opens the runs table


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


def test_an_error_trial_with_the_best_psnr_is_never_best(tmp_path):
    """The review's crash: an ERROR trial reporting the highest PSNR made `variant_dirs['l1']` raise KeyError.

    Now one rule (`SweepResult.best`, finished trials only) picks what is exported and what the pipeline uses.
    """
    from tune_util import tiny_opts

    from orchestrator.plan import make_plan
    from orchestrator.trials import SweepResult
    from orchestrator.tune import export_best

    def ckpt(name: str) -> str:
        d = tmp_path / "ray" / name
        d.mkdir(parents=True)
        (d / "which.txt").write_text(name)
        return str(d)

    trials = (
        _trial("l1_ok", "l1", {"loss": "l1"}, 25.0, 0.7, checkpoint=ckpt("l1_ok")),
        _trial("l1_err", "l1", {"loss": "l1"}, 30.0, 0.8, state="ERROR", checkpoint=ckpt("l1_err")),
        _trial("fd_ok", "fd", {"loss": "fd"}, 26.0, 0.7, checkpoint=ckpt("fd_ok")),
        _trial("fd_err", "fd", {"loss": "fd"}, 31.0, 0.8, state="ERROR", checkpoint=ckpt("fd_err")),
    )
    result = SweepResult(plan=make_plan(tiny_opts(tmp_path)), trials=trials)
    assert result.best().trial_id == "fd_ok" and result.best("l1").trial_id == "l1_ok"
    assert result.best(finished=False).trial_id == "fd_err"  # reported when asked, never exported
    exported = export_best(result)
    out = Path(exported.plan.out)
    assert (out / "best-l1" / "which.txt").read_text() == "l1_ok"
    assert (out / "best-fd" / "which.txt").read_text() == "fd_ok"
    assert (out / "best" / "which.txt").read_text() == "fd_ok"
    assert json.loads((out / "best.json").read_text())["trial_id"] == "fd_ok"
    comparison = pipeline.select_stage(exported)  # no KeyError: the same rule picked both
    assert (comparison.baseline.trial_id, comparison.best_fgd.trial_id) == ("l1_ok", "fd_ok")
    assert comparison.dirs() == {"l1": str(out / "best-l1"), "fd": str(out / "best-fd")}


def test_paired_plan_equal_trials_and_shared_settings(tmp_path):
    """Issue 11's fair comparison: each variant as many trials, on the same sampled lr/batch within a slot."""
    from collections import Counter

    from tune_util import tiny_opts

    from orchestrator.plan import make_plan

    (tmp_path / "s.yaml").write_text(
        "space:\n  loss: {choice: [l1, cs, fd]}\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
        "  batch_size: {choice: [4, 8]}\n  alpha: {uniform: [0.05, 0.5]}\n"
    )
    plan = make_plan(tiny_opts(tmp_path, space=str(tmp_path / "s.yaml"), paired=True, num_samples=3))
    assert plan.trials == len(plan.points) == 9
    assert Counter(p["loss"] for p in plan.points) == {"l1": 3, "cs": 3, "fd": 3}
    slots = [plan.points[i : i + 3] for i in range(0, 9, 3)]
    shared = [{k: v for k, v in p.items() if k != "loss"} for p in plan.points]
    for i, slot in enumerate(slots):
        assert [p["loss"] for p in slot] == ["l1", "cs", "fd"]
        assert shared[3 * i] == shared[3 * i + 1] == shared[3 * i + 2]  # only the loss differs in a slot
    assert (
        shared[0]["lr"] == plan.base.lr and shared[0]["batch_size"] == plan.base.batch_size
    )  # slot 0: the base
    assert len({s["lr"] for s in shared}) == 3 and all(1e-4 <= s["lr"] < 1e-2 for s in shared)
    assert (
        make_plan(
            tiny_opts(tmp_path / "b", space=str(tmp_path / "s.yaml"), paired=True, num_samples=3)
        ).points
        == plan.points
    )
    with pytest.raises(UserError, match="search optuna"):
        make_plan(tiny_opts(tmp_path / "c", paired=True, search="optuna"))


def test_demo_pipeline_plan_is_fair(tmp_path, monkeypatch):
    """`make demo`'s plan: l1 and fd twice each on shared settings; selected on images the report does not score."""
    monkeypatch.chdir(tmp_path)
    plan = pipeline.make_pipeline_plan(
        pipeline.PipelineOptions(load_pipeline_config(None), out=tmp_path / "o")
    )
    assert [p["loss"] for p in plan.sweep.points] == ["l1", "fd", "l1", "fd"]
    sel = plan.selection
    assert sel.val_images == ("camera", "gravel", "coins")
    assert sel.eval_images == ("rocket", "coffee", "astronaut", "chelsea", "ihc")
    assert sel.overlap == ()
    assert not (tmp_path / "o").exists()  # planning writes nothing


def test_small_model_note_says_the_verdict_is_about_this_model():
    from orchestrator.pipeline_report import _small_model_note
    from orchestrator.pipeline_summary import Deployment

    def dep(l1: int, fd: int) -> Deployment:
        return Deployment("onnxruntime", "", {}, {"l1": {"params": l1}, "fd": {"params": fd}}, {}, "", "")

    assert "×1.76" in _small_model_note(dep(100, 176))[0]
    assert _small_model_note(dep(812_768, 870_788)) == []  # full size: ×1.07, no note
