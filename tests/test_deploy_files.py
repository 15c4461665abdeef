"""deploy/ and docs/CLUSTER.md: every file parses, and every `fgdsr` command line in them is accepted by the CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DRY_RUN_COMMANDS = {"tune"}  # run with --dry-run: validates config, space, resources, storage, tracking
PARSE_ONLY = {"ui", "tracking-server"}  # servers: arguments parsed, nothing started


def _fgdsr_lines() -> list[tuple[str, str]]:
    """(file, command line) for every `fgdsr <command> ...` in deploy/ files and docs/CLUSTER.md."""
    found = []
    files = sorted(p for p in DEPLOY.iterdir() if p.is_file()) + [REPO / "docs" / "CLUSTER.md"]
    for path in files:
        text = path.read_text()
        if path.suffix == ".md":  # commands in fenced code blocks, not prose
            text = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S))
        if path.suffix in (".yaml", ".yml"):
            # folded YAML scalars (the RayJob entrypoint) span lines: read the parsed values too
            text += "\n" + "\n".join(_strings(list(yaml.safe_load_all(text))))
        text = text.replace("\\\n", " ")
        for m in re.finditer(r"(?<![\w/.-])fgdsr\s+(tune|ui|tracking-server)\b[^\n\"'`]*", text):
            found.append((path.name, " ".join(m.group(0).split())))
    return found


def _strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def test_every_deploy_file_parses():
    for path in DEPLOY.iterdir():
        if path.suffix in (".yaml", ".yml"):
            docs = list(yaml.safe_load_all(path.read_text()))
            assert docs and all(isinstance(d, dict) for d in docs), path
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"postgres", "mlflow"}
    cmd = " ".join(compose["services"]["mlflow"]["command"])
    assert "fgdsr tracking-server --host 0.0.0.0" in cmd and "postgresql://" in cmd
    env = compose["services"]["mlflow"]["environment"]
    assert {"PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD"} <= set(env)  # secrets by variable, not argument
    assert "MLFLOW_DB_PASSWORD" not in cmd and "PASSWORD" not in cmd
    launcher = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "docker"):
        assert key in launcher
    assert launcher["head_node_type"] in launcher["available_node_types"]
    job = yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("fgdsr tune --address auto")
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_dockerfiles_are_well_formed():
    for name in ("Dockerfile", "mlflow.Dockerfile"):
        lines = [
            ln for ln in (DEPLOY / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")
        ]
        assert lines[0].startswith("FROM "), name
        # instructions: every logical line starts with a known keyword (continuations end with a backslash)
        prev_cont = False
        for ln in lines:
            if not prev_cont:
                assert ln.split()[0] in {"FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "CMD", "EXPOSE"}, ln
            prev_cont = ln.rstrip().endswith("\\")
    gpu = (DEPLOY / "Dockerfile").read_text()
    for needed in ("nvidia/cuda", "torch", "tensorrt", "pycuda", ".[tune,track,server,onnx]"):
        assert needed in gpu, needed


def test_command_lines_found():
    lines = _fgdsr_lines()
    files = {f for f, _ in lines}
    assert {"ray-cluster.yaml", "rayjob.yaml", "docker-compose.yml", "Dockerfile", "CLUSTER.md"} <= files
    assert any("--address auto" in c for _, c in lines)


@pytest.mark.parametrize("where,line", _fgdsr_lines())
def test_command_line_is_accepted(where, line, tmp_path, monkeypatch):
    from typer.main import get_command
    from typer.testing import CliRunner

    from orchestrator.cli import app

    monkeypatch.chdir(REPO)  # relative config paths in the docs are relative to the repository
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = shlex.split(line, comments=True)[1:]
    if args[0] in DRY_RUN_COMMANDS:
        # --out into tmp so an existing sweep folder never matters; the flag given last wins in Click
        args = [*args, "--dry-run", "--out", str(tmp_path / "out")]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, f"{where}: `{line}` -> {result.output}"
        assert "dry run" in result.output
    else:
        group = get_command(app)
        cmd = group.get_command(None, args[0])
        assert cmd is not None, f"{where}: unknown command in `{line}`"
        cmd.make_context(args[0], args[1:])  # raises on an unknown option or a bad value


def _options(args: list[str]) -> list[str]:
    return [a for a in args if a.startswith("--")]


def test_cluster_server_line_is_the_one_the_tests_run(monkeypatch):
    """docker-compose.yml and CLUSTER.md start the PostgreSQL server with the command line that
    tests/test_server.py runs (same flags, same order), and it plans a logged-in cluster server."""
    from server_util import cluster_server_args

    from orchestrator.server import ServerOptions, plan_server

    tested = cluster_server_args(5000, "postgresql://mlflow@127.0.0.1:5432/mlflow", "/tmp/artifacts")
    lines = [(f, c) for f, c in _fgdsr_lines() if " tracking-server " in c and "postgresql://" in c]
    assert {f for f, _ in lines} == {"docker-compose.yml", "CLUSTER.md"}
    for where, line in lines:
        args = shlex.split(line)[1:]
        assert _options(args) == _options(tested), f"{where}: `{line}`"
        assert args[args.index("--host") + 1] == "0.0.0.0"
        get = {a: args[i + 1] for i, a in enumerate(args) if a.startswith("--")}
        opts = ServerOptions(
            backend_store_uri=get["--backend-store-uri"],
            artifacts_destination=get["--artifacts-destination"],
            host=get["--host"],
            port=int(get["--port"]),
        )
        plan = plan_server(opts, env={})  # no password in the URI (refused), login on, hosts checked
        assert plan.auth and plan.allowed_hosts and plan.backend_uri.startswith("postgresql://")
