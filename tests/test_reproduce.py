"""`fgdsr reproduce`: the paper's constants, Table 2 (bicubic + complexity), Table 1 aggregation and a tiny run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import reproduce as rep
from orchestrator import table1 as t1


def test_paper_constants_match_the_papers_text():
    # Sec. 3.1: CS is 0.5 dB above the baseline on Set5, FD 0.58 dB; Table 2's x4 rows repeat Table 1's.
    assert rep.PAPER_TABLE1["cs"]["Set5"] - rep.PAPER_TABLE1["l1"]["Set5"] == pytest.approx(0.50)
    assert rep.PAPER_TABLE1["fd"]["Set5"] - rep.PAPER_TABLE1["l1"]["Set5"] == pytest.approx(0.58)
    for s in rep.SETS:
        assert rep.PAPER_TABLE2[4]["LapSRN"][s][0] == rep.PAPER_TABLE1["l1"][s]
        assert rep.PAPER_TABLE2[4]["Ours"][s][0] == rep.PAPER_TABLE1["fd"][s]
    assert rep.PAPER_TABLE2[2]["Bicubic"]["Set5"] == (33.66, 0.9299)
    assert rep.PAPER_TABLE2[3]["Bicubic"]["Set5"] == (30.39, 0.8682)
    assert rep.PAPER_TABLE2[4]["Bicubic"]["Set5"] == (28.42, 0.8104)


def test_table2_complexity_srcnn_vdsr_exact():
    rows = {r["method"]: r for r in rep.table2_complexity(scales=(4,))}
    assert rows["SRCNN"]["weights"] == 57_184 and rows["SRCNN"]["params"] == 57_281
    assert round(rows["SRCNN"]["mult_adds_naive"] / 1e9, 2) == 52.70
    assert rows["VDSR"]["weights"] == 664_704 and rows["VDSR"]["params"] == 665_921
    assert round(rows["VDSR"]["mult_adds_naive"] / 1e9, 2) == 612.59
    # LapSRN official x4 (issue 5): 812,768 weights, 117.49 G true / 149.35 G naive
    assert rows["LapSRN"]["weights"] == 812_768
    assert round(rows["LapSRN"]["mult_adds_true"] / 1e9, 2) == 117.49
    assert round(rows["LapSRN"]["mult_adds_naive"] / 1e9, 2) == 149.35
    assert rows["Ours"]["weights"] > rows["LapSRN"]["weights"]  # the FD head adds weights
    assert rows["VDSR"]["diff_weights_k"] == pytest.approx(664.704 - 665.0)
    assert rows["SRCNN"]["diff_mult_adds_naive_g"] == pytest.approx(
        rows["SRCNN"]["mult_adds_naive"] / 1e9 - 52.7
    )


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True)


def test_cli_bad_input_is_one_line():
    for args, needle in (
        (["reproduce", "table3"], "table3"),
        (["reproduce", "table1"], "--budget-minutes"),
        (["reproduce", "table1", "--budget-minutes", "1", "--variants", "l1,xx"], "--variants"),
        (["reproduce", "table2", "--data-root", "/nonexistent", "--no-track"], "/nonexistent"),
    ):
        p = _run_cli(*args)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2, (args, p.stderr)
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], (args, p.stderr)


@pytest.mark.slow
def test_table2_matches_the_papers_bicubic_rows(data_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = rep.reproduce_table2(data_root=str(data_root), out=tmp_path / "t2", tracking_uri=uri, quiet=True)
    set5 = {r["scale"]: r for r in res["bicubic"] if r["dataset"] == "Set5"}
    assert sorted(set5) == [2, 3, 4]
    for r in set5.values():
        assert abs(r["diff_psnr"]) <= 0.02, r
        assert abs(r["diff_ssim"]) <= 0.001, r
    saved = json.loads((tmp_path / "t2" / "table2.json").read_text())
    assert saved["bicubic"] == res["bicubic"]
    text = (tmp_path / "t2" / "table2.md").read_text()
    assert "| ×4 | Set5 | 5 | 28.4" in text and "| ×4 | VDSR | 664.7 K |" in text
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    run = c.get_run(res["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["bicubic_x4_Set5_psnr"] == pytest.approx(set5[4]["psnr"])
    assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"table2.md", "table2.json"}


def test_table1_resume_without_a_run_is_one_line(tmp_path):
    with pytest.raises(rep.UserError, match="--resume") as e:
        t1.reproduce_table1(
            t1.Table1Options(budget_minutes=1, out=tmp_path / "none", resume=True, quiet=True)
        )
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_table1_tiny_cpu_run_end_to_end(data_root, tmp_path):
    """Two variants, one seed, a few seconds each: trained through Ray Tune, evaluated, written, tracked."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tiny = Path(__file__).resolve().parents[1] / "fgdsr" / "configs" / "tiny.yaml"
    root = tmp_path / "data"  # Set5 only: the evaluation stays short
    root.mkdir()
    (root / "Set5").symlink_to(data_root / "Set5")
    res = t1.reproduce_table1(t1.Table1Options(
        budget_minutes=0.05, seeds=1, gpus=0, config=tiny, variants=("l1", "fd"), data_root=str(root),
        overrides={"channels": 8, "depth": 2, "batch_size": 4, "patch_size": 32, "class_patch": 8, "val_max_images": 1},
        train_dataset="builtin-train", out=tmp_path / "t1", tracking_uri=uri, quiet=True, calibration_s=1.5,
    ))  # fmt: skip
    assert {t.variant for t in res.trials} == {"l1", "fd"}
    assert all(t.steps == res.info["max_steps"] for t in res.trials)  # equal steps
    for v in ("l1", "fd"):
        assert res.table[v]["Set5"]["n"] == 1 and 10 < res.table[v]["Set5"]["mean"] < 40
    # every image of every (variant, seed) is kept, and its mean is the table's
    for t in res.trials:
        own = [s.psnr for s in res.scores if s.trial_id == t.trial_id and s.dataset == "Set5"]
        assert len(own) == 5 and sum(own) / 5 == pytest.approx(t.psnr["Set5"])
    saved = json.loads((tmp_path / "t1" / "table1.json").read_text())
    assert len(saved["scores"]) == 10 and {"variant", "seed", "dataset", "image", "psnr", "ssim"} <= set(
        saved["scores"][0]
    )
    # the issue-11 schema: rows with the paired difference to l1 and its interval
    fd = next(r for r in saved["rows"] if r["variant"] == "fd" and r["dataset"] == "Set5")
    assert {"variant", "dataset", "psnr", "delta_vs_l1", "seeds", "images"} <= set(fd)
    lo, hi = fd["delta_vs_l1"]["ci95"]
    assert lo <= fd["delta_vs_l1"]["mean"] <= hi and fd["seeds"] == 1 and fd["images"] == 5
    own = {s["image"]: s["psnr"] for s in saved["scores"] if s["variant"] == "fd"}
    base = {s["image"]: s["psnr"] for s in saved["scores"] if s["variant"] == "l1"}
    assert fd["delta_vs_l1"]["mean"] == pytest.approx(sum(own[k] - base[k] for k in own) / 5)
    text = (tmp_path / "t1" / "table1.md").read_text()
    assert "| Baseline |" in text and "paper +0.58" in text and "Δ vs Baseline [95 % CI]" in text
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    paths = {a.path for a in c.list_artifacts(res.parent_run_id, "table1")}
    assert paths == {"table1/table1.md", "table1/table1.json"}
    assert res.sets == ("Set5",)
    # the same --out again without --resume is refused (the state file keeps the budget -> steps mapping)
    with pytest.raises(rep.UserError, match="--resume"):
        t1.reproduce_table1(
            t1.Table1Options(
                budget_minutes=0.05, config=tiny, out=tmp_path / "t1", data_root=str(root), quiet=True
            )
        )


# ------------------------------------------------------------------------------------ Table 1 comparison
def _scores(arm: str, deltas: dict[int, list[float]]):
    """ImageScores of `arm`: seed -> per-image PSNR offsets over a fixed baseline of 30 dB (3 images)."""
    return [t1.ImageScore(arm, seed, "Set5", f"im{i}", 30.0 + d, 0.9, f"{arm}-{seed}", entropy=5.0 + i)
            for seed, ds in deltas.items() for i, d in enumerate(ds)]  # fmt: skip


def test_readings_parse_and_trials_map_back_to_their_arm():
    arm = t1.parse_reading("cs_paper:loss=cs,alpha=0.004,areas=3;5;7")
    assert arm == t1.Arm("cs_paper", {"loss": "cs", "alpha": "0.004", "areas": "3,5,7"})
    arms = (t1.Arm("cs", {"loss": "cs"}), arm)
    assert t1.arm_of({"loss": "cs", "seed": 0}, arms) == "cs"
    assert t1.arm_of({"loss": "cs", "alpha": "0.004", "areas": "3,5,7", "seed": 1}, arms) == "cs_paper"
    for bad in ("noname", "l1:loss=l1", "x:alpha"):
        with pytest.raises(rep.UserError, match="--reading"):
            t1.parse_reading(bad)


def test_compare_pairs_by_seed_and_image():
    """fd is l1 + (0.1, 0.2, 0.3) dB on both seeds: Δ = +0.2 exactly paired, slope +0.1 dB per bit of entropy."""
    scores = _scores("l1", {0: [0, 0, 0], 1: [0.5, -0.5, 0.2]}) + _scores(
        "fd", {0: [0.1, 0.2, 0.3], 1: [0.6, -0.3, 0.5]}
    )
    arms = (t1.Arm("l1", {"loss": "l1"}), t1.Arm("fd", {"loss": "fd"}))
    rows = {r.variant: r for r in t1.compare(scores, arms, ["Set5"])}
    assert rows["l1"].delta_vs_l1 is None and rows["l1"].psnr == pytest.approx(30 + 0.2 / 6)
    d = rows["fd"].delta_vs_l1
    assert d.mean == pytest.approx(0.2) and (d.seeds, d.images) == (2, 3)
    assert d.ci95[0] == pytest.approx(0.1) and d.ci95[1] == pytest.approx(0.3)  # image effects only
    assert rows["fd"].entropy_slope.mean == pytest.approx(0.1)
    assert rows["fd"].paper == t1.PAPER_TABLE1["fd"]["Set5"]


def test_table1_markdown_reports_the_paired_delta_and_its_verdict():
    """A +0.2 dB gain whose interval excludes zero reads "better"; the row carries the paper's Δ and the CI."""
    scores = _scores("l1", {0: [0, 0, 0], 1: [0.5, -0.5, 0.2]}) + _scores(
        "fd", {0: [0.1, 0.2, 0.3], 1: [0.6, -0.3, 0.5]}
    )
    arms = (t1.Arm("l1", {"loss": "l1"}), t1.Arm("fd", {"loss": "fd"}))
    info = {"command": "fgdsr reproduce table1 --steps 10", "machine": "m", "date": "d", "wall_s": 1.0,
            "train_dataset": "T91+BSD200:train", "val_dataset": "T91+BSD200:val", "model": "lapsrn", "scale": 4,
            "seeds": 2, "budget": "steps", "steps": {"l1": 10, "fd": 10}, "steps_per_s": {}}  # fmt: skip
    rows = t1.compare(scores, arms, ["Set5"])
    text = t1.table1_markdown(t1.Table1Result(info, ("Set5",), "", (), tuple(scores), rows), arms)
    fd = next(line for line in text.splitlines() if line.startswith("| +FD Loss |"))
    cells = [c.strip() for c in fd.strip("|").split("|")]
    assert cells[1:6] == ["Set5", "30.23 ± 0.05", "+0.200 [+0.100, +0.300]", "better", "paper +0.58"]
    assert cells[7] == "2 × 3"
    assert "| Baseline | Set5 | 30.03 ± 0.05 | — | — |" in text
    assert "steps Baseline 10, +FD Loss 10" in text and "equal steps" in text
    assert "half-widths are 0.100–0.100 dB" in text


def test_every_trial_sets_every_field_a_reading_changes(tmp_path):
    """The cs arm must run at the config's alpha, not at a value Tune samples from the reading's choice."""
    from fgdsr.config import CONFIG_DIR, load_config

    arms = (t1.Arm("l1", {"loss": "l1"}), t1.Arm("cs", {"loss": "cs"}),
            t1.parse_reading("cs_a05:loss=cs,alpha=0.05,train_decode=hard"))  # fmt: skip
    base = load_config(CONFIG_DIR / "tiny.yaml")
    state = t1.Table1State({a.name: 7 for a in arms}, {}, "steps", None, 2, arms, "tiny.yaml", {}, "")
    plan = t1.sweep_plan(state, t1.Table1Options(steps=7, out=tmp_path), base)
    assert len(plan.points) == 6
    by_arm = {(t1.arm_of(p, arms), p["seed"]): p for p in plan.points}
    assert set(by_arm) == {(a.name, s) for a in arms for s in (0, 1)}
    for s in (0, 1):
        assert float(by_arm[("cs", s)]["alpha"]) == base.alpha != 0.05
        assert by_arm[("cs", s)]["train_decode"] == base.train_decode != "hard"
        assert (
            float(by_arm[("cs_a05", s)]["alpha"]) == 0.05 and by_arm[("cs_a05", s)]["train_decode"] == "hard"
        )
        assert by_arm[("l1", s)]["max_steps"] == 7 == by_arm[("l1", s)]["val_every"]
