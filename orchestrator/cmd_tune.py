"""`fgdsr tune`, `fgdsr ui`, `fgdsr tracking-server`: thin Typer commands over orchestrator.tune/server.

Nothing heavy at the top: Ray, MLflow and torch are imported inside the commands.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer


def tune(
    config: Path | None = typer.Option(
        None, "--config", help="Base TrainConfig YAML (default: the demo config)."
    ),
    space: Path | None = typer.Option(
        None, "--space", help="Search-space YAML (default: fgdsr/configs/space.yaml)."
    ),
    gpus: float = typer.Option(
        ..., "--gpus", help="GPUs for the sweep (0: CPU trials); a budget with --address."
    ),
    gpus_per_trial: float | None = typer.Option(
        None, "--gpus-per-trial", help="GPUs per trial; <1 shares a GPU."
    ),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="CPUs per trial (per worker)."),
    num_samples: int | None = typer.Option(
        None, "--num-samples", help="Trials (grid: passes over the grid)."
    ),
    search: str = typer.Option("optuna", "--search", help="optuna (TPE) | random | grid."),
    scheduler: str = typer.Option("asha", "--scheduler", help="asha (early stop on val PSNR) | fifo."),
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="Training steps per trial (overrides config)."
    ),
    address: str | None = typer.Option(None, "--address", help="Join a Ray cluster: auto | HOST:PORT."),
    storage: str | None = typer.Option(
        None, "--storage", help="Tune storage: DIR (NFS on clusters) | s3://..."
    ),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help="MLflow store (default sqlite ./mlflow.db)."
    ),
    experiment: str = typer.Option("fgdsr", "--experiment", help="MLflow experiment name."),
    name: str = typer.Option(
        "sweep", "--name", help="Sweep name (Tune experiment folder, MLflow parent run)."
    ),
    out: Path = typer.Option(Path("runs/tune"), "--out", help="Output folder (best/, sweep.json, ray/)."),
    resume: bool = typer.Option(False, "--resume", help="Restore an interrupted sweep (same --out/--name)."),
    max_failures: int = typer.Option(
        3, "--max-failures", help="Restarts per trial (node loss) from its checkpoint."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and validate; train nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts)."),
    verbose: bool = typer.Option(
        False, "--verbose", help="Ray/MLflow/Optuna logs on the terminal (default: <out>/fgdsr.log)."
    ),
) -> None:
    """Hyperparameter sweep of LapSRN + FGD loss on Ray Tune, every trial tracked in MLflow.

    SIGTERM or Ctrl-C stops it as Tune does (state saved, trials stopped) and exits with code 75;
    the same command with --resume finishes it.
    """
    from orchestrator.plan import TuneOptions, make_plan

    plan = make_plan(
        TuneOptions(
            config=str(config) if config else None,
            space=str(space) if space else None,
            gpus=gpus,
            gpus_per_trial=gpus_per_trial,
            cpus_per_trial=cpus_per_trial,
            num_samples=num_samples,
            search=search,
            scheduler=scheduler,
            max_steps=max_steps,
            address=address,
            storage=storage,
            tracking_uri=tracking_uri,
            experiment=experiment,
            name=name,
            out=str(out),
            resume=resume,
            max_failures=max_failures,
            dry_run=dry_run,
            verbose=verbose,
            command_line=shlex.join(["fgdsr", *sys.argv[1:]]),
        )
    )
    _run_and_print(plan, as_json)


def _run_and_print(plan, as_json: bool) -> None:
    """JSON on stdout (for scripts), the plan (dry run), or fgdsr's progress and the results table."""
    import contextlib

    from orchestrator.tune import run_sweep

    if as_json:  # stdout carries the JSON only (--verbose: the libraries' output goes to stderr)
        with contextlib.redirect_stdout(sys.stderr):
            result = run_sweep(plan)
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    elif plan.dry_run:
        _print_plan(run_sweep(plan).plan)
        return
    else:
        result = _run_with_progress(plan)
        if not result.partial:
            _print_result(result)
    if result.partial:
        _stopped(result)


def _stopped(result) -> None:
    """A sweep stopped before its trials finished (SIGTERM, Ctrl-C): one line on stderr, exit 75."""
    from fgdsr.preemption import PREEMPTED_EXIT_CODE

    plan = result.plan
    done = sum(t.state in ("TERMINATED", "ERROR") for t in result.trials)  # Tune may not have made them all
    again = plan.command_line or f"fgdsr tune --out {plan.out} --name {plan.name} ..."
    again += "" if " --resume" in again else " --resume"
    typer.echo(f"sweep '{plan.name}' stopped by {result.stopped_by or 'an interrupt'} with {done} of "
               f"{plan.trials} trials finished; state saved in {plan.experiment_path}; finish it with: "
               f"{again} (exit {PREEMPTED_EXIT_CODE})", err=True)  # fmt: skip
    raise typer.Exit(PREEMPTED_EXIT_CODE)


def _run_with_progress(plan):
    """The sweep with fgdsr's own bars on the terminal; the libraries' output in <out>/fgdsr.log."""
    from rich.console import Console

    from orchestrator.logs import library_output
    from orchestrator.progress import progress_bars, sweep_bars
    from orchestrator.tune import preflight, run_sweep

    console = Console(file=sys.stdout)  # bound now: inside library_output sys.stdout is the log file
    preflight(plan)
    where = "here" if plan.verbose else str(plan.log_file)
    console.print(f"[bold]fgdsr tune[/bold] '{plan.name}': {plan.trials} trials x {plan.base.max_steps} steps "
                  f"({plan.search}, {plan.scheduler}, {plan.resources.concurrency} at once); library logs: {where}")  # fmt: skip
    with library_output(plan.log_file, plan.verbose), progress_bars(console) as bars, sweep_bars(bars, plan):
        return run_sweep(plan)


def _print_plan(plan) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    res = plan.resources
    con.print(f"[bold]fgdsr tune plan[/bold] '{plan.name}' (dry run: nothing trained)")
    con.print(
        f"  trials: {plan.trials}  search: {plan.search}  scheduler: {plan.scheduler}"
        + (f" (grace {plan.asha.grace_period} of {plan.asha.max_t} steps)" if plan.asha else "")
    )
    con.print(
        f"  resources: {res.gpus:g} GPUs, {res.gpus_per_trial:g} GPU + {res.cpus_per_trial:g} CPU per "
        f"trial x {res.workers_per_trial} worker(s); {res.concurrency} trials at once; "
        f"cluster: {plan.cluster}" + (" (budget checked when connecting)" if plan.cluster != "local" else "")
    )
    con.print(f"  storage: {plan.experiment_path}  max_failures: {plan.max_failures}")
    con.print(f"  tracking: {plan.tracking_uri}  experiment: {plan.experiment}")
    con.print(f"  base config: {plan.config} (max_steps {plan.base.max_steps})")
    described = plan.space.describe()
    t = Table(title="search space")
    t.add_column("field")
    t.add_column("domain")
    for k, v in described["params"].items():
        t.add_row(k, json.dumps(v))
    con.print(t)
    if described["forced"]:
        con.print(f"  evaluated first: {described['forced']}")


def _print_result(result) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    plan, best = result.plan, result.best()
    keys = sorted({k for t in result.trials for k in t.config} - {"loss"})
    t = Table(title=f"sweep '{plan.name}': {len(result.trials)} trials in {result.wall_s:.0f} s")
    for col in ("trial", "state", "variant", *keys, "steps", "PSNR", "SSIM", "best PSNR"):
        t.add_column(col)
    for tr in sorted(result.trials, key=lambda x: -(x.best_val_psnr or -1e9)):
        mark = " *" if best is not None and tr.trial_id == best.trial_id else ""
        t.add_row(
            tr.trial_id + mark,
            tr.state,
            tr.variant,
            *[_fmt(tr.config.get(k)) for k in keys],
            str(tr.steps),
            _fmt(tr.val_psnr, ".2f"),
            _fmt(tr.val_ssim, ".4f"),
            _fmt(tr.best_val_psnr, ".2f"),
        )
    con.print(t)
    if best is None:
        con.print("[bold red]No trial finished with a validation result; nothing exported.[/bold red]")
    else:
        con.print(
            f"best: {best.trial_id} ({best.label}) val PSNR {best.best_val_psnr:.2f} dB at step {best.best_step} "
            f"-> {result.best_dir}" + (f"; registered as {result.registered}" if result.registered else "")
        )
    if result.analysis:
        con.print(f"sweep report: {result.analysis['report']}; Optuna study: "
                  f"optuna-dashboard {result.analysis['study_storage']}")  # fmt: skip
    from orchestrator.tracking import ui_url

    con.print(f"MLflow: {result.tracking_uri} (parent run {result.parent_run_id}); open it with `fgdsr ui`, "
              f"then {ui_url(result.tracking_uri, result.experiment_id)}", markup=False)  # fmt: skip


def _fmt(v, spec: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not spec:
        return f"{v:.3g}"
    return format(v, spec) if spec else str(v)


def ui(
    port: int = typer.Option(5000, "--port", help="Port on 127.0.0.1."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="Store (default: ./mlflow.db)."),
    experiment: str | None = typer.Option(
        None, "--experiment", help="Open this experiment's runs table (default: the list of experiments)."
    ),
) -> None:
    """Open the MLflow UI (127.0.0.1) on this folder's store, or on a tracking server (logged in with
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), to compare trials; prints the URL to open."""
    from orchestrator import tracking
    from orchestrator.server import check_access, open_ui

    uri = tracking.resolve_tracking_uri(tracking_uri)
    exp_id = None
    if experiment is not None:
        check_access(uri)  # one line, not minutes of retries, when the server is not there
        exp_id = tracking.experiment_id(uri, experiment)
    url = tracking.ui_link(f"http://127.0.0.1:{port}", exp_id)
    typer.echo(f"MLflow UI for {uri}: {url} (Ctrl+C to stop)")
    raise typer.Exit(open_ui(uri, port))


def tracking_server(
    backend_store_uri: str | None = typer.Option(
        None,
        "--backend-store-uri",
        help="sqlite:///ABS/mlflow.db (default ./mlflow.db) or postgresql://USER@HOST:PORT/DB (password: PGPASSWORD).",
    ),
    artifacts_destination: str = typer.Option(
        "./mlartifacts",
        "--artifacts-destination",
        help="Where the server stores artifacts (DIR or s3://...).",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Bind address; 0.0.0.0 to serve a cluster (login required)."
    ),
    port: int = typer.Option(5000, "--port"),
    workers: int = typer.Option(1, "--workers", help="Server worker processes (1 is enough for a sweep)."),
    auth: bool | None = typer.Option(
        None, "--auth/--no-auth", help="MLflow basic-auth login (default: on unless --host is loopback)."
    ),
    allowed_hosts: str | None = typer.Option(
        None,
        "--allowed-hosts",
        help="Host names clients use, comma-separated (default with a network --host: this machine's names, "
        "localhost, private IPs).",
    ),
    default_permission: str = typer.Option(
        "READ", "--default-permission", help="What a logged-in user may do on others' experiments."
    ),
    auth_database_uri: str | None = typer.Option(
        None, "--auth-database-uri", help="Users and permissions store (default: the backend store)."
    ),
) -> None:
    """Start `mlflow server` with proxied artifacts for a cluster (trials log over HTTP).

    With a network --host it requires a login (MLflow basic-auth): set MLFLOW_AUTH_ADMIN_PASSWORD at the
    first start; clients set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
    """
    from orchestrator.server import ServerOptions, check_admin_exists, plan_server, serve

    plan = plan_server(
        ServerOptions(
            backend_store_uri=backend_store_uri,
            artifacts_destination=artifacts_destination,
            host=host,
            port=port,
            workers=workers,
            auth=auth,
            allowed_hosts=allowed_hosts,
            default_permission=default_permission,
            auth_database_uri=auth_database_uri,
        )
    )
    check_admin_exists(plan)
    login = "login required (MLflow basic-auth)" if plan.auth else "no login: loopback only"
    typer.echo(
        f"MLflow server on http://{host}:{port} (store {plan.backend_uri}, artifacts {plan.artifacts}; {login}); "
        f"trials use --tracking-uri http://<this host>:{port}"
    )
    raise typer.Exit(serve(plan))
