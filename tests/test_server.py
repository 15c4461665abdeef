"""The tracking server: loopback without login, cluster mode behind MLflow's basic-auth, on a real PostgreSQL.

The slow tests start a real PostgreSQL (tests/server_util.py), a real `fgdsr tracking-server --host 0.0.0.0`
and a real Ray, and only ever talk to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from server_util import (
    FGDSR,
    REPO,
    basic_auth,
    cluster_server_args,
    count_points,
    free_port,
    grep_tree,
    http_status,
    running_postgres,
    serving,
)
from typer.testing import CliRunner

from fgdsr.errors import UserError
from orchestrator import server, tracking
from orchestrator.cli import app

ADMIN_PASSWORD = "adm1n-Tz8qK3vW9xR2"  # distinctive strings: grepped for in every store and folder below
DB_PASSWORD = "db-Pq7mN4sL1cX6"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=5"

# ------------------------------------------------------------------------------------------ fast: plan


def test_loopback_is_plain_mlflow_without_login():
    plan = server.plan_server(server.ServerOptions(backend_store_uri="sqlite:////x/m.db"), env={})
    assert not plan.auth and plan.allowed_hosts == ()
    cmd = server.server_command(plan)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--workers") + 1] == "1"
    assert "--serve-artifacts" in cmd and "--app-name" not in cmd and "--allowed-hosts" not in cmd
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:////x/m.db"
    ui = server.ui_command("sqlite:////x/m.db", 5055)
    assert ui[ui.index("--host") + 1] == "127.0.0.1" and "5055" in ui


def test_cluster_mode_needs_login_and_checks_hosts():
    opts = server.ServerOptions(backend_store_uri="postgresql://mlflow@db:5432/mlflow", host="0.0.0.0")
    plan = server.plan_server(opts, env={})
    assert plan.auth and plan.auth_db_uri == plan.backend_uri  # auth tables beside MLflow's own
    cmd = server.server_command(plan)
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    hosts = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert "*" not in hosts  # never every Host header (DNS rebinding) unless asked for
    assert {socket.gethostname(), f"{socket.gethostname()}:*", "localhost:*", "10.*"} <= set(hosts)
    custom = server.plan_server(
        server.ServerOptions(host="10.0.0.5", allowed_hosts="mlflow.internal, mlflow.internal:*"), env={}
    )
    assert custom.allowed_hosts == ("mlflow.internal", "mlflow.internal:*")
    # --auth on loopback (a shared machine): allowed; --no-auth on the network: refused
    assert server.plan_server(server.ServerOptions(auth=True), env={}).auth
    with pytest.raises(UserError, match="needs a login"):
        server.plan_server(server.ServerOptions(host="0.0.0.0", auth=False), env={})


def test_admin_password_rules_and_no_secret_in_config():
    opts = server.ServerOptions(host="0.0.0.0", backend_store_uri="sqlite:////x/m.db")
    with pytest.raises(UserError, match="default password"):
        server.plan_server(opts, env={server.ADMIN_PASSWORD_VAR: server.LEGACY_ADMIN_PASSWORD})
    with pytest.raises(UserError, match="12 characters"):
        server.plan_server(opts, env={server.ADMIN_PASSWORD_VAR: "short"})
    with pytest.raises(UserError, match="PGPASSWORD"):  # would show in `ps` and the server's log
        server.plan_server(
            server.ServerOptions(backend_store_uri=f"postgresql://u:{DB_PASSWORD}@h/db"), env={}
        )
    env = {server.ADMIN_PASSWORD_VAR: ADMIN_PASSWORD}
    plan = server.plan_server(opts, env=env)
    ini = server.auth_config(plan)
    assert "database_uri = sqlite:////x/m.db" in ini and "admin_username = admin" in ini
    assert f"auth_cache_ttl_seconds = {server.AUTH_CACHE_TTL_S}" in ini  # logins cached, not PBKDF2 each time
    assert ADMIN_PASSWORD not in ini and "password" not in ini
    assert ADMIN_PASSWORD not in " ".join(server.server_command(plan))
    senv = server.server_env(plan, Path("/x/auth.ini"), env=env)
    assert senv["MLFLOW_AUTH_CONFIG_PATH"] == "/x/auth.ini" and len(senv[server.SECRET_KEY_VAR]) == 64
    assert senv["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_credentials_as_mlflow_finds_them(tmp_path):
    assert server.credentials({}, home=tmp_path) is None
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = alice\nmlflow_tracking_password = from-file-pw\n"
    )
    assert server.credentials({}, home=tmp_path) == ("alice", "from-file-pw")
    env = {server.USER_VAR: "bob", server.PASSWORD_VAR: "from-env-pw"}
    assert server.credentials(env, home=tmp_path) == ("bob", "from-env-pw")  # the variables win


def test_allowed_hosts_from_mlflows_variable():
    env = {server.ALLOWED_HOSTS_VAR: "mlflow.example.org,mlflow.example.org:*"}
    plan = server.plan_server(server.ServerOptions(host="0.0.0.0"), env=env)
    assert plan.allowed_hosts == ("mlflow.example.org", "mlflow.example.org:*")
    plan = server.plan_server(server.ServerOptions(host="0.0.0.0", allowed_hosts="a.org"), env=env)
    assert plan.allowed_hosts == ("a.org",)  # the flag wins


def test_cli_refusals_are_one_line(monkeypatch):
    monkeypatch.setenv(server.ADMIN_PASSWORD_VAR, server.LEGACY_ADMIN_PASSWORD)
    r = CliRunner().invoke(
        app, ["tracking-server", "--host", "0.0.0.0", "--backend-store-uri", "sqlite:////x/m.db"]
    )
    assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(app, ["tracking-server", "--host", "0.0.0.0", "--no-auth"])
    assert r.exit_code == 2 and "needs a login" in r.output


def test_check_access_when_nothing_listens():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match="no MLflow server answers there") as e:
        server.check_access(uri, timeout=5)
    assert uri in str(e.value)
    server.check_access("sqlite:////x/m.db")  # database stores: nothing to check


@pytest.mark.slow
def test_first_start_without_admin_password_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != server.ADMIN_PASSWORD_VAR}
    args = ["tracking-server", "--host", "0.0.0.0", "--port", str(free_port())]
    args += [
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'm.db'}",
        "--artifacts-destination",
        str(tmp_path),
    ]
    r = subprocess.run(FGDSR + args, env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith(
        "error: first start of an authenticated server: set MLFLOW_AUTH_ADMIN_PASSWORD"
    )
    assert len(r.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------- slow: PostgreSQL + basic-auth


@pytest.fixture(scope="module")
def cluster_server(tmp_path_factory):
    """`fgdsr tracking-server --host 0.0.0.0` (cluster mode: basic-auth) on a real PostgreSQL."""
    tmp = tmp_path_factory.mktemp("cluster-server")
    with running_postgres(DB_PASSWORD) as pg:
        port = free_port()
        args = cluster_server_args(port, pg.uri, str(tmp / "artifacts"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update({"PGPASSWORD": DB_PASSWORD, server.ADMIN_PASSWORD_VAR: ADMIN_PASSWORD})
        log = tmp / "server.log"
        with serving(args, port, env, log) as url:
            yield {"url": url, "pg": pg, "tmp": tmp, "log": log}


@pytest.mark.slow
def test_unauthenticated_requests_get_401(cluster_server):
    url = cluster_server["url"] + SEARCH
    assert http_status(url) == 401
    assert http_status(url, basic_auth("admin", "wrong-password-123")) == 401
    assert http_status(url, basic_auth("admin", server.LEGACY_ADMIN_PASSWORD)) == 401
    assert http_status(url, basic_auth("admin", ADMIN_PASSWORD)) == 200
    # MLflow's host check: a Host header that is not one of ours (DNS rebinding) is refused
    assert http_status(url, {"Host": "evil.example", **basic_auth("admin", ADMIN_PASSWORD)}) == 403
    with pytest.raises(UserError, match="login and it is missing"):
        server.check_access(cluster_server["url"])


def _sweep(tmp: Path, uri: str, **kw):
    """The only call into orchestrator.tune in this module (the lead adapts it if run_sweep changes)."""
    from tune_util import tiny_opts

    from orchestrator.plan import make_plan
    from orchestrator.tune import run_sweep

    opts = tiny_opts(tmp, tracking_uri=uri, **kw)
    return opts, run_sweep(make_plan(opts))


@pytest.fixture()
def ray_tmp():
    """Ray's session folder for one test (short: Ray's socket paths are limited), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_sweep_with_credentials_logs_and_the_password_stays_secret(
    cluster_server, tmp_path, monkeypatch, ray_tmp
):
    """Ray is started *before* the credentials are set, as on a cluster started elsewhere: the workers do
    not inherit them, so they must come through `orchestrator.credentials` (not Ray's job config)."""
    import ray

    url, pg = cluster_server["url"], cluster_server["pg"]
    for k in (server.USER_VAR, server.PASSWORD_VAR, server.ADMIN_PASSWORD_VAR, "PGPASSWORD"):
        monkeypatch.delenv(k, raising=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(ray_tmp))
    try:
        with pytest.raises(UserError, match="HTTP 401"):  # no login: one line, before any trial starts
            _sweep(tmp_path / "nologin", url, num_samples=1)
        monkeypatch.setenv(server.USER_VAR, "admin")
        monkeypatch.setenv(server.PASSWORD_VAR, ADMIN_PASSWORD)
        seen = ray.get(ray.remote(lambda: os.environ.get(server.PASSWORD_VAR)).remote())
        assert seen is None  # the workers really lack it
        opts, result = _sweep(tmp_path / "sweep", url, steps=4, val_every=2, num_samples=2)
    finally:
        ray.shutdown()
    assert not result.partial and len(result.trials) == 2
    assert all(t.state == "TERMINATED" and t.steps == 4 for t in result.trials)
    c = tracking.client(url)
    runs = tracking.child_runs(url, result.experiment_id, result.parent_run_id)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    n_expected, n_found = count_points(url, result, Path(opts.out) / "ray" / opts.name, steps=4)
    assert n_found == n_expected
    print(f"\nAUTH sweep: runs {len(runs)}/2 FINISHED, points {n_found}/{n_expected}")
    assert any(
        f.path == "checkpoint/model.safetensors"
        for f in c.list_artifacts(result.best().mlflow_run_id, "checkpoint")
    )
    # the password (and the database's) nowhere: MLflow's database, its artifacts and log, Ray's storage
    # and session folder, the sweep's outputs
    dump = pg.dump()
    assert "experiment_permissions" in dump and f"{result.parent_run_id}" in dump  # a real dump of both
    for secret in (ADMIN_PASSWORD, DB_PASSWORD):
        assert secret not in dump
        for folder in (cluster_server["tmp"], Path(opts.out), ray_tmp, tmp_path):
            assert grep_tree(folder, secret) == [], (secret, folder)
    assert (Path(opts.out) / "ray" / opts.name).is_dir() and any(ray_tmp.rglob("*.log"))
    assert json.loads((Path(opts.out) / "sweep.json").read_text())["parent_run_id"] == result.parent_run_id


@pytest.mark.slow
def test_fgdsr_ui_logs_in_to_the_server(cluster_server, tmp_path):
    """`fgdsr ui --tracking-uri http://SERVER` serves the server's UI on 127.0.0.1, logged in from the env."""
    port = free_port()
    env = {**os.environ, server.USER_VAR: "admin", server.PASSWORD_VAR: ADMIN_PASSWORD}
    args = ["ui", "--port", str(port), "--tracking-uri", cluster_server["url"]]
    with serving(args, port, env, tmp_path / "ui.log") as ui:
        with urllib.request.urlopen(ui + SEARCH, timeout=30) as r:
            assert r.status == 200 and '"experiments"' in r.read().decode()
        with urllib.request.urlopen(ui + "/", timeout=30) as r:
            assert r.status == 200 and b"<html" in r.read().lower()  # the UI's page, through the proxy
        assert http_status(ui + SEARCH, {"Host": "evil.example"}) == 403  # DNS rebinding: refused
    assert http_status(cluster_server["url"] + SEARCH) == 401  # the server itself still needs the login
    wrong = {**env, server.PASSWORD_VAR: "not-the-password"}
    r = subprocess.run(FGDSR + args, env=wrong, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "was refused (HTTP 401)" in r.stderr


def test_module_imports_stay_light():
    """server.py / credentials.py / ui_proxy.py import no MLflow or Ray at the top (fast CLI start)."""
    code = "import sys, orchestrator.server, orchestrator.credentials, orchestrator.ui_proxy; "
    code += "print(sorted(m for m in ('mlflow', 'ray', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr
