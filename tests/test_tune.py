"""`fgdsr tune` on real Ray Tune + real MLflow (sqlite), CPU only: plan, errors, a 4-trial sweep, logical GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tune_util import tiny_opts
from typer.testing import CliRunner

from fgdsr.errors import UserError
from orchestrator import space as space_mod
from orchestrator import tracking
from orchestrator.cli import app
from orchestrator.plan import TuneOptions, make_plan
from orchestrator.tune import run_sweep

# ----------------------------------------------------------------------------------------- fast: plan


def test_default_space_and_demo_config_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plan = make_plan(TuneOptions(gpus=0, out=str(tmp_path / "o")))
    base, space = plan.base, plan.space
    assert base.train_dataset == "builtin-train" and base.max_steps <= 200
    assert set(space.params) >= {"loss", "alpha", "beta", "bins", "areas", "lr", "batch_size", "head_levels"}
    assert "l1" in space.params["loss"][1] and [p["loss"] for p in space.forced] == ["l1"]
    # a complete point (Optuna's warm start checks that every sampled field is there), base values kept
    assert set(space.forced[0]) == {k for k, v in space.params.items() if isinstance(v, tuple)}
    assert space.forced[0]["lr"] == base.lr and space.forced[0]["areas"] == "3,5,7"
    assert plan.trials == 4 and plan.search == "optuna" and plan.asha.time_attr == "step"
    assert plan.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert plan.storage == str(tmp_path / "o" / "ray")


@pytest.mark.parametrize(
    "gpus,per_trial,concurrency,workers",
    [(4, 0.5, 8, 1), (4, 1, 4, 1), (4, 2, 2, 2), (3, 0.25, 12, 1), (8, None, 8, 1)],
)
def test_concurrency_is_gpus_over_gpus_per_trial(tmp_path, gpus, per_trial, concurrency, workers):
    plan = make_plan(tiny_opts(tmp_path, gpus=gpus, gpus_per_trial=per_trial))
    assert plan.resources.concurrency == concurrency
    assert plan.resources.workers_per_trial == workers


def test_cpu_concurrency_and_grid(tmp_path):
    plan = make_plan(tiny_opts(tmp_path, gpus=0, num_cpus=6, cpus_per_trial=2))
    assert plan.resources.concurrency == 3 and plan.resources.gpus_per_trial == 0
    (tmp_path / "grid.yaml").write_text(
        "space:\n  loss: {choice: [cs, fd]}\n  bins: {choice: [16, 32, 64]}\n"
    )
    plan = make_plan(tiny_opts(tmp_path, space=str(tmp_path / "grid.yaml"), search="grid", num_samples=None))
    space = plan.space
    assert plan.trials == 9  # (cs, fd, + the forced l1) x 3
    grid = space_mod.to_param_space(space, "grid")
    assert sorted(grid["loss"]["grid_search"]) == ["cs", "fd", "l1"]


def test_space_file_parsing(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("space:\n  areas: {choice: [[3, 5, 7], [1, 3, 5]]}\n  lr: {loguniform: [1.0e-4, 1.0e-3]}\n")
    s = space_mod.load_space(p)
    ps = space_mod.to_param_space(s, "optuna")
    assert ps["areas"].categories == ["3,5,7", "1,3,5"]  # Optuna categoricals hold scalars only
    from fgdsr.config import TrainConfig, apply_overrides

    assert apply_overrides(TrainConfig(), {"areas": "1,3,5"}).areas == [1, 3, 5]
    assert space_mod.force_variants(s, ["l1"]).params == s.params  # no loss axis: nothing forced
    for bad, msg in [
        ("space:\n  nope: 1\n", "unknown config field"),
        ("space:\n  lr: {loguniform: [0, 1]}\n", "low > 0"),
        ("space:\n  lr: {normal: [0, 1]}\n", "exactly one of"),
        ("space:\n  loss: {choice: [l1, l9]}\n", "l9"),
        ("spaces: {}\n", "unknown top-level"),
    ]:
        p.write_text(bad)
        with pytest.raises(UserError, match=msg):
            make_plan(tiny_opts(tmp_path / "x", space=str(p)))


def test_dry_run_json_and_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    r = CliRunner().invoke(app, ["tune", "--gpus", "4", "--gpus-per-trial", "0.5", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["dry_run"] and out["plan"]["resources"]["concurrency"] == 8 and out["trials"] == []
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()  # nothing written
    for args, needle in [
        (["--gpus", "0", "--gpus-per-trial", "1"], "needs --gpus > 0"),
        (["--gpus", "2", "--gpus-per-trial", "1.5"], "whole number"),
        (["--gpus", "1", "--gpus-per-trial", "2"], "must be in"),
        (["--gpus", "0", "--search", "bayes"], "--search bayes"),
        (["--gpus", "0", "--tracking-uri", "file:///tmp/mlruns"], "file store"),
        (["--gpus", "0", "--resume"], "--resume"),
        (["--gpus", "0", "--config", "missing.yaml"], "not found"),
    ]:
        r = CliRunner().invoke(app, ["tune", *args, "--dry-run"])
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_existing_sweep_needs_resume(tmp_path):
    opts = tiny_opts(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "state-sweep.json").write_text("{}")
    with pytest.raises(UserError, match="already exists"):
        run_sweep(make_plan(opts))


def test_resume_with_a_changed_sweep_is_refused(tmp_path):
    """Tuner.restore ignores a new --num-samples/--space/--search: fgdsr names the difference and exits 2."""
    from orchestrator.plan import SweepState

    opts = tiny_opts(tmp_path)
    plan = make_plan(opts)
    SweepState(plan.to_dict(), "1", "0" * 32).write(plan.state_file)  # as a started sweep leaves it
    (tmp_path / "wide.yaml").write_text(
        (tmp_path / "space.yaml").read_text().replace("[5.0e-4, 2.0e-3]", "[1.0e-4, 2.0e-3]")
    )
    base = [
        "tune",
        "--gpus",
        "0",
        "--config",
        opts.config,
        "--out",
        opts.out,
        "--tracking-uri",
        opts.tracking_uri,
    ]
    base += ["--search", "random", "--scheduler", "fifo", "--resume", "--dry-run"]
    same = ["--space", opts.space, "--num-samples", "2"]
    assert CliRunner().invoke(app, [*base, *same]).exit_code == 0  # nothing changed: resumable
    for args, needle in [
        (["--space", opts.space, "--num-samples", "3"], "--num-samples 3 differs from the sweep's 2"),
        (["--space", str(tmp_path / "wide.yaml"), "--num-samples", "2"], "--space field 'lr'"),
        ([*same, "--max-steps", "9"], "--config field 'max_steps' is 9, the sweep's was 8"),
    ]:
        r = CliRunner().invoke(app, [*base, *args])
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = CliRunner().invoke(app, [*base, *same[:2], "--num-samples", "2", "--search", "optuna"])
    assert r.exit_code == 2 and "--search optuna differs from the sweep's random" in r.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["--tracking-uri", "http://127.0.0.1:9"],
            "--tracking-uri http://127.0.0.1:9: no MLflow server answers",
        ),
        (["--address", "127.0.0.1:1"], "--address 127.0.0.1:1: no Ray cluster answers"),
    ],
)
def test_unreachable_server_or_cluster_fails_fast(tmp_path, args, needle):
    """Nothing listening there: one line naming the URI/address, exit 2, in seconds and before Ray starts."""
    import subprocess
    import sys
    import time

    opts = tiny_opts(tmp_path)
    cmd = [sys.executable, "-m", "orchestrator", "tune", "--gpus", "0", "--config", opts.config, "--space"]
    cmd += [opts.space, "--out", opts.out, *args]
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": opts.tracking_uri}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    took = time.perf_counter() - t0
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], p.stderr
    assert (
        not (Path(opts.out) / "ray").exists() and not (Path(opts.out) / "fgdsr.log").exists()
    )  # Ray never ran
    assert took < 60, f"took {took:.0f} s"  # the CLI's imports on a loaded machine; the check itself is 3-5 s


# ------------------------------------------------------------------------------- slow: real sweeps


@pytest.mark.slow
def test_cpu_sweep_four_trials(tmp_path):
    """The issue's first must-show: `--gpus 0`, 4 trials, 1 parent + 4 child runs, best exported and loadable."""
    opts = tiny_opts(tmp_path, steps=4, val_every=2)
    args = ["tune", "--gpus", "0", "--num-samples", "4", "--config", opts.config, "--space", opts.space]
    args += ["--out", opts.out, "--tracking-uri", opts.tracking_uri, "--experiment", "cpu4", "--json"]
    r = CliRunner().invoke(app, args)  # the default search (Optuna TPE) and scheduler (ASHA)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    uri = opts.tracking_uri
    assert len(res["trials"]) == 4 and not res["partial"]
    assert all(t["state"] == "TERMINATED" and t["steps"] >= 2 for t in res["trials"])  # ASHA grace: 2
    assert max(t["steps"] for t in res["trials"]) == 4
    assert res["trials"][0]["variant"] == "l1" or any(t["variant"] == "l1" for t in res["trials"])
    c = tracking.client(uri)
    exp = c.get_experiment_by_name("cpu4")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    children = [r for r in runs if r.data.tags.get(tracking.PARENT_TAG) == res["parent_run_id"]]
    assert len(parents) == 1 and len(children) == 4 and len(runs) == 5
    assert all(r.info.status == "FINISHED" for r in runs)  # none left RUNNING (ASHA stops included)
    # the MLflow UI opens it as model training (runs table), child runs are named by what a person compares
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert parents[0].data.tags["git_commit"] and parents[0].data.params["search"] == "optuna"
    for ch in children:
        assert ch.data.params["loss"] in ("l1", "fd") and "lr" in ch.data.params
        assert ch.data.tags["variant"] == ch.data.params["loss"]
        assert ch.info.run_name.split()[0] == ch.data.params["loss"] and " lr=" in ch.info.run_name
        assert ch.data.tags[tracking.TRIAL_TAG] in {t["trial_id"] for t in res["trials"]}
        assert len(c.get_metric_history(ch.info.run_id, "lr")) >= 2  # per-step metrics
        assert c.get_metric_history(ch.info.run_id, "val_psnr")
        arts = {f.path for f in c.list_artifacts(ch.info.run_id, "plots")}
        assert "plots/validation.png" in arts
    # the Optuna study is in the sweep folder and holds every trial (`optuna-dashboard sqlite:///…/optuna.db`)
    import optuna

    study = optuna.load_study(
        study_name="sweep", storage=f"sqlite:///{Path(opts.out).resolve() / 'optuna.db'}"
    )
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert sorted(t.params["loss"] for t in study.trials) == sorted(t["variant"] for t in res["trials"])
    assert res["analysis"]["study_trials"] == 4 and Path(res["analysis"]["report"]).is_file()
    assert "analysis/sweep.md" in {f.path for f in c.list_artifacts(res["parent_run_id"], "analysis")}
    # the best trial: exported, registered, loadable, evaluable
    best = Path(res["best_dir"])
    assert best == Path(opts.out).resolve() / "best"
    from fgdsr.checkpoint import load_model, read_meta

    model, cfg, meta = load_model(best)
    assert cfg.loss == res["best"]["variant"]
    assert read_meta(best)["mlflow_run_id"] == res["best"]["mlflow_run_id"]
    assert res["best"]["best_val_psnr"] == max(
        t["best_val_psnr"] for t in res["trials"] if t["best_val_psnr"]
    )
    name, version = res["registered"].split("/")
    assert c.get_model_version(name, version).run_id == res["best"]["mlflow_run_id"]
    assert (Path(opts.out) / "best-l1" / "model.safetensors").is_file()
    ev = CliRunner().invoke(
        app,
        ["evaluate", "--checkpoint", str(best), "--dataset", "builtin-eval", "--max-images", "1", "--json"],
    )
    assert ev.exit_code == 0, ev.output
    assert "psnr" in ev.output.lower()


@pytest.mark.slow
def test_logical_gpus_eight_concurrent_trials(tmp_path):
    """`ray.init(num_gpus=4)` on a CPU box, 0.5 GPU per trial: 8 trials at once, each sees no real GPU."""
    import ray

    ray.init(num_cpus=8, num_gpus=4, include_dashboard=False, log_to_driver=False)
    try:
        opts = tiny_opts(
            tmp_path, steps=8, val_every=4, gpus=4, gpus_per_trial=0.5, num_samples=8, register=False
        )
        result = run_sweep(make_plan(opts))
    finally:
        ray.shutdown()
    assert result.plan.resources.concurrency == 8
    assert len(result.trials) == 8 and all(t.state == "TERMINATED" for t in result.trials)
    runs = tracking.child_runs(opts.tracking_uri, result.experiment_id, result.parent_run_id)
    assert len(runs) == 8
    # all 8 ran at the same time: every run started before the first one ended
    assert max(r.info.start_time for r in runs) < min(r.info.end_time for r in runs)
    gpu_ids = set()
    for r in runs:
        tags = r.data.tags
        assert tags["cuda_available"] == "False" and tags["device"] == "cpu"  # fell back to the CPU
        assert tags["cuda_visible_devices"] == tags["ray_gpu_ids"] != ""  # Tune assigned a logical GPU
        gpu_ids.add(tags["ray_gpu_ids"])
    assert gpu_ids == {"0", "1", "2", "3"}  # two trials per logical GPU


@pytest.mark.slow
def test_trial_as_torch_trainer_with_two_cpu_workers(tmp_path):
    """Several workers per trial: a Ray Train TorchTrainer driven from the trial, Accelerate on 2 CPU workers."""
    opts = tiny_opts(tmp_path, steps=2, val_every=2, num_samples=1, workers_per_trial=2, cpus_per_trial=0.5)
    result = run_sweep(make_plan(opts))
    (trial,) = result.trials
    assert trial.state == "TERMINATED" and trial.steps == 2 and trial.best_val_psnr is not None
    (run,) = tracking.child_runs(opts.tracking_uri, result.experiment_id, result.parent_run_id)
    assert run.data.tags["workers"] == "2" and run.info.status == "FINISHED"  # rank 0 tracked, 2 in the group
    assert run.data.tags["accelerate"] == "MULTI_CPUx2"  # Accelerate really runs data parallel on 2 processes
    from fgdsr.checkpoint import load_model

    load_model(result.best_dir)  # Ray Train's persisted checkpoint, exported as the best
