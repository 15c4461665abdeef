"""Sweep analysis as Optuna users know it: a persisted study, hyperparameter importances, parallel coordinates.

Every sweep leaves an Optuna study in its folder (`<out>/optuna.db`, study name = sweep name), so
`optuna-dashboard sqlite:///<out>/optuna.db` opens it: with `--search optuna` it is the searcher's own study
(Ray's `OptunaSearch(storage=…, study_name=…)`); with random or grid search it is written here from the trials.
Importances (fANOVA, seeded) and the parallel-coordinates figure are computed on the trials' best validation
PSNR, the number every other fgdsr table ranks by, and go into `<out>/sweep.md` and the parent MLflow run.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator import tracking
from orchestrator.space import SearchSpace, sampled_fields
from orchestrator.trials import SweepResult


@dataclass(frozen=True)
class SweepAnalysis:
    study_storage: str  # sqlite:///<out>/optuna.db
    study_name: str
    study_trials: int  # trials the persisted study holds
    importances: tuple[tuple[str, float], ...]  # (field, share of the PSNR variance), largest first
    figure: str | None  # the parallel-coordinates PNG
    report: str  # <out>/sweep.md
    note: str = ""  # why importances are missing, when they are

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions of the sampled fields (choices as Tune carries them: lists encoded "3,5,7")."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from orchestrator.space import encode

    out = {}
    for name in sampled_fields(space):
        domain, args = space.params[name]
        if domain == "choice":
            out[name] = CategoricalDistribution([encode(a) for a in args])
        elif domain == "randint":
            out[name] = IntDistribution(int(args[0]), int(args[1]) - 1)
        else:
            out[name] = FloatDistribution(float(args[0]), float(args[1]), log=domain == "loguniform")
    return out


def _frozen_trials(result: SweepResult) -> list:
    """The sweep's trials as Optuna trials: value = best validation PSNR; failed or unreported: FAIL."""
    from optuna.trial import TrialState, create_trial

    dists = distributions(result.plan.space)
    out = []
    for t in result.trials:
        params = {n: t.config[n] for n in dists if n in t.config}
        ok = t.finished and t.best_val_psnr is not None
        out.append(create_trial(
            params=params, distributions={n: dists[n] for n in params}, value=t.best_val_psnr if ok else None,
            state=TrialState.COMPLETE if ok else TrialState.FAIL,
            user_attrs={"trial_id": t.trial_id, "variant": t.variant, "mlflow_run_id": t.mlflow_run_id or ""},
        ))  # fmt: skip
    return out


def persist_study(result: SweepResult) -> int:
    """The study in `<out>/optuna.db`: Optuna's own (search optuna), else written from the trials; -> its size."""
    import optuna

    plan = result.plan
    study = optuna.create_study(storage=plan.study_storage, study_name=plan.name, direction="maximize",
                                load_if_exists=True)  # fmt: skip
    if plan.search != "optuna" and not study.trials:
        study.add_trials(_frozen_trials(result))
    return len(study.trials)


def importances(result: SweepResult) -> tuple[tuple[tuple[str, float], ...], str]:
    """fANOVA importances of the sampled fields for the best validation PSNR -> (pairs, note)."""
    import optuna

    study = optuna.create_study(direction="maximize")  # in memory: the same target for every search
    study.add_trials(_frozen_trials(result))
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(done) < 2:
        return (), f"importances need at least 2 finished trials ({len(done)} here)"
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (ValueError, RuntimeError) as e:
        return (), f"importances not computable ({e})"
    note = f"fANOVA over {len(done)} finished trials" + (
        "; indicative only at this size" if len(done) < 20 else ""
    )
    return tuple((k, float(v)) for k, v in imp.items()), note


def plot_parallel(result: SweepResult, path: Path) -> Path | None:
    """Optuna's parallel-coordinates plot of the sampled fields against the best validation PSNR."""
    import optuna

    from fgdsr.atomic import save_figure_atomic
    from orchestrator.figures import _plt

    _plt()  # Agg when headless
    study = optuna.create_study(direction="maximize")
    study.add_trials(_frozen_trials(result))
    if not any(t.state.name == "COMPLETE" for t in study.trials) or not study.trials[0].params:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning: the matplotlib backend is marked experimental
        ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study, target_name="best val PSNR (dB)")
    fig = ax.figure
    fig.set_size_inches(max(7.0, 1.6 * len(study.trials[0].params)), 4.5)
    return save_figure_atomic(fig, path, dpi=100, bbox_inches="tight")


def sweep_markdown(
    result: SweepResult, imp: tuple[tuple[str, float], ...], note: str, figure: str | None
) -> str:
    """`<out>/sweep.md`: the trials, the importances, the figure, and how to open the study."""
    from orchestrator import report

    plan = result.plan
    parts = [
        f"# Sweep `{plan.name}`",
        f"{len(result.trials)} trials ({plan.search}, {plan.scheduler}) in {result.wall_s:.0f} s; MLflow "
        f"`{plan.tracking_uri}`, experiment `{plan.experiment}`, parent run `{result.parent_run_id}`.",
        report.md_table(*report.trials_table(result.trials)),
        "## Hyperparameter importances (best validation PSNR)",
        report.md_table(["field", "importance"], [[k, f"{v:.3f}"] for k, v in imp]) if imp else f"_{note}_",
    ]
    if imp:
        parts.append(f"{note}.")
    if figure:
        parts += ["## Parallel coordinates", f"![parallel coordinates]({Path(figure).relative_to(plan.out)})"]
    parts.append(f"Optuna study: `optuna-dashboard {plan.study_storage}` (study `{plan.name}`).")
    return "\n\n".join(parts) + "\n"


def analyse_sweep(result: SweepResult) -> SweepAnalysis:
    """Persist the study, compute importances and the figure, write sweep.md, attach both to the parent run."""
    from fgdsr.atomic import write_text_atomic

    plan = result.plan
    n = persist_study(result)
    imp, note = importances(result)
    fig = plot_parallel(result, Path(plan.out) / "figures" / f"parallel_coordinates-{plan.name}.png")
    md = write_text_atomic(Path(plan.out) / "sweep.md", sweep_markdown(result, imp, note, fig and str(fig)))
    tracking.log_files(plan.tracking_uri, result.parent_run_id, [md, *([fig] if fig else [])], "analysis")
    return SweepAnalysis(plan.study_storage, plan.name, n, imp, fig and str(fig), str(md), note)
