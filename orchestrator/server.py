"""The MLflow tracking server: `fgdsr tracking-server` (a database store, proxied artifacts) and `fgdsr ui`.

Two modes, chosen by the bind address:

- loopback (`--host 127.0.0.1`, the default): plain `mlflow server`, no login, like `mlflow ui`; only
  processes on this machine reach it.
- cluster (`--host 0.0.0.0` or any other address): MLflow's own `basic-auth` app. Every request needs a
  user and password (HTTP basic auth; trials and `fgdsr ui` send `MLFLOW_TRACKING_USERNAME` /
  `MLFLOW_TRACKING_PASSWORD`), and MLflow's host check accepts only the Host headers in `allowed_hosts`
  (DNS-rebinding protection), never `*` unless asked for. The admin user is created at the first start
  from `MLFLOW_AUTH_ADMIN_PASSWORD` (12+ characters; MLflow's old shipped default is refused).

No secret is ever put on a command line, in the generated auth config or in a log: the database password
comes from libpq's `PGPASSWORD` (or `~/.pgpass`), the admin password from `MLFLOW_AUTH_ADMIN_PASSWORD`,
the CSRF key from `MLFLOW_FLASK_SERVER_SECRET_KEY` (a random one per start when unset).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fgdsr.errors import UserError
from orchestrator import tracking

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ADMIN_PASSWORD_VAR = "MLFLOW_AUTH_ADMIN_PASSWORD"
SECRET_KEY_VAR = "MLFLOW_FLASK_SERVER_SECRET_KEY"
ALLOWED_HOSTS_VAR = "MLFLOW_SERVER_ALLOWED_HOSTS"
USER_VAR, PASSWORD_VAR = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
# The admin password that MLflow releases before 3.x shipped in basic_auth.ini (GHSA-gq3w-7jj3-x7gr).
LEGACY_ADMIN_PASSWORD = "password1234"
MIN_PASSWORD_LENGTH = 12  # MLflow's own password policy (mlflow.utils.validation._validate_password)
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
# MLflow checks the password hash (PBKDF2) on every request unless it caches successful logins: measured
# 795 ms vs 31 ms per authenticated request on this project's shared 2-core machine (docs/RELIABILITY.md),
# and a trial makes dozens. The cache keeps an HMAC of the login, never the password; a password changed
# through the API takes effect at once on the worker that handled it (the default is one worker), and out
# of band (SQL) within this many seconds.
AUTH_CACHE_TTL_S = 60


@dataclass(frozen=True)
class ServerOptions:
    """What `fgdsr tracking-server` takes (CLI flags map 1:1); `plan_server` validates it."""

    backend_store_uri: str | None = None  # None: sqlite:///<cwd>/mlflow.db
    artifacts_destination: str = "./mlartifacts"
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    auth: bool | None = None  # None: on unless `host` is loopback
    allowed_hosts: str | None = None  # comma-separated Host patterns; None: this machine's names + LAN
    default_permission: str = "READ"  # what an authenticated user may do on others' experiments
    admin_username: str = "admin"
    auth_database_uri: str | None = None  # None: the backend store (MLflow keeps the auth tables apart)


@dataclass(frozen=True)
class ServerPlan:
    """A validated server: everything `server_command` and `auth_config` need (no secrets)."""

    backend_uri: str  # sqlite:////abs/mlflow.db | postgresql://user@host:port/db (no password)
    artifacts: str  # absolute folder or s3://...
    host: str
    port: int
    workers: int
    auth: bool
    allowed_hosts: tuple[str, ...]  # () : MLflow's default (localhost and private addresses)
    default_permission: str
    admin_username: str
    auth_db_uri: str


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _check_store_uri(flag: str, uri: str) -> None:
    if tracking.is_http(uri):
        raise UserError(f"{flag} {uri}: the server needs a database (sqlite:///... or postgresql://...)")
    if urlsplit(uri).password:
        raise UserError(
            f"{flag}: the URI holds a password, which would show in `ps` and in logs; "
            "drop it from the URI and set PGPASSWORD (or ~/.pgpass) for PostgreSQL"
        )


def default_allowed_hosts() -> tuple[str, ...]:
    """Host headers a cluster-mode server accepts by default: localhost, this machine's names, private IPs."""
    names = []
    for name in ("localhost", "127.0.0.1", "[::1]", socket.gethostname(), socket.getfqdn()):
        if name and name not in names:
            names.append(name)
    private = ["10.*", "192.168.*", *[f"172.{i}.*" for i in range(16, 32)]]
    return (*names, *[f"{n}:*" for n in names], *private)


def plan_server(opts: ServerOptions, env: dict[str, str] | None = None) -> ServerPlan:
    """Validate `opts` (one-line `UserError`s) and resolve the defaults."""
    env = os.environ if env is None else env
    uri = tracking.resolve_tracking_uri(opts.backend_store_uri)
    _check_store_uri("--backend-store-uri", uri)
    if opts.workers < 1:
        raise UserError("--workers must be at least 1")
    if not 0 < opts.port < 65536:
        raise UserError(f"--port {opts.port}: use 1..65535")
    auth = not is_loopback(opts.host) if opts.auth is None else opts.auth
    if not auth and not is_loopback(opts.host):
        raise UserError(
            f"--host {opts.host} --no-auth: a server on the network needs a login; keep --auth, or bind "
            "to 127.0.0.1 behind your own authenticating proxy"
        )
    if opts.default_permission not in PERMISSIONS:
        raise UserError(
            f"--default-permission {opts.default_permission}: use one of {', '.join(PERMISSIONS)}"
        )
    if auth:
        _check_admin_password(env.get(ADMIN_PASSWORD_VAR))
    auth_db = opts.auth_database_uri or uri
    _check_store_uri("--auth-database-uri", auth_db)
    dest = opts.artifacts_destination
    if "://" not in dest:
        dest = str(Path(dest).expanduser().resolve())
    if opts.allowed_hosts is not None:
        hosts = tuple(h.strip() for h in opts.allowed_hosts.split(",") if h.strip())
        if not hosts:
            raise UserError("--allowed-hosts: give at least one host name (or '*' to accept any)")
    elif env.get(ALLOWED_HOSTS_VAR):  # MLflow's own variable (how deploy/docker-compose.yml sets it)
        hosts = tuple(h.strip() for h in env[ALLOWED_HOSTS_VAR].split(",") if h.strip())
    else:
        hosts = () if is_loopback(opts.host) else default_allowed_hosts()
    return ServerPlan(
        backend_uri=uri,
        artifacts=dest,
        host=opts.host,
        port=opts.port,
        workers=opts.workers,
        auth=auth,
        allowed_hosts=hosts,
        default_permission=opts.default_permission,
        admin_username=opts.admin_username,
        auth_db_uri=auth_db,
    )


def _check_admin_password(password: str | None) -> None:
    """Refuse a weak bootstrap password before MLflow starts (None or empty: the admin must exist already)."""
    if not password:
        return
    if password == LEGACY_ADMIN_PASSWORD:
        raise UserError(
            f"{ADMIN_PASSWORD_VAR}: refused, it is the default password old MLflow releases shipped; "
            "pick another"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"{ADMIN_PASSWORD_VAR}: use at least {MIN_PASSWORD_LENGTH} characters")


def check_admin_exists(plan: ServerPlan, env: dict[str, str] | None = None) -> None:
    """At the first start of an authenticated server the admin password must be given (MLflow's own
    bootstrap would fail later with a traceback); checked against the auth store itself."""
    env = os.environ if env is None else env
    if not plan.auth or env.get(ADMIN_PASSWORD_VAR):
        return
    import warnings

    with warnings.catch_warnings():  # a deprecation notice from starlette, imported by mlflow.server
        warnings.simplefilter("ignore")
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(plan.auth_db_uri)  # creates or migrates the auth tables, as MLflow's bootstrap does
    if not store.has_user(plan.admin_username, use_primary=True):
        raise UserError(
            f"first start of an authenticated server: set {ADMIN_PASSWORD_VAR} "
            f"({MIN_PASSWORD_LENGTH}+ characters) to create the admin user '{plan.admin_username}'"
        )


def server_command(plan: ServerPlan) -> list[str]:
    """`mlflow server` for `plan`: proxied artifacts (clients need no storage credentials), lean."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", plan.backend_uri]
    cmd += ["--serve-artifacts", "--artifacts-destination", plan.artifacts]
    cmd += ["--host", plan.host, "--port", str(plan.port), "--workers", str(plan.workers)]
    if plan.auth:
        cmd += ["--app-name", "basic-auth"]
    if plan.allowed_hosts:
        cmd += ["--allowed-hosts", ",".join(plan.allowed_hosts)]
    return cmd


def auth_config(plan: ServerPlan) -> str:
    """The basic-auth app's ini (MLFLOW_AUTH_CONFIG_PATH): no password in it, ever."""
    return (
        "[mlflow]\n"
        f"default_permission = {plan.default_permission}\n"
        f"database_uri = {plan.auth_db_uri}\n"
        f"admin_username = {plan.admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
    )


def server_env(
    plan: ServerPlan, config_path: Path | None, env: dict[str, str] | None = None
) -> dict[str, str]:
    """The server process's environment: the caller's, plus the auth config and a CSRF key."""
    out = dict(os.environ if env is None else env)
    # The GenAI job runner (an extra consumer process per server) is not used by sweeps.
    out.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if plan.auth:
        assert config_path is not None
        out["MLFLOW_AUTH_CONFIG_PATH"] = str(config_path)
        # CSRF protection of the login forms; a fresh key per start only logs browsers out.
        out[SECRET_KEY_VAR] = out.get(SECRET_KEY_VAR) or secrets.token_hex(32)
    return out


def serve(plan: ServerPlan) -> int:
    """Run the server in the foreground until it exits or Ctrl+C (after `check_admin_exists`); returns its
    exit code. The auth config lives in a private temp folder for the server's lifetime."""
    with tempfile.TemporaryDirectory(prefix="fgdsr-server-") as d:
        config = None
        if plan.auth:
            config = Path(d) / "basic_auth.ini"
            config.write_text(auth_config(plan))
        return run_foreground(server_command(plan), server_env(plan, config))


def ui_command(uri: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """`mlflow ui` for the store `uri` (the current folder's mlflow.db by default), on loopback."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
    ]


def open_ui(uri: str, port: int) -> int:
    """The MLflow UI on 127.0.0.1:`port` until Ctrl+C: `mlflow ui` on a database store, or for an HTTP
    server a loopback proxy that logs in with MLflow's credential variables (`orchestrator.ui_proxy`)."""
    if tracking.is_http(uri):
        check_access(uri)
        from orchestrator.ui_proxy import serve_proxy

        return serve_proxy(uri, port, credentials())
    return run_foreground(ui_command(uri, port))


def run_foreground(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run a server in the foreground until it exits; Ctrl+C or SIGTERM stops it and its workers."""
    import signal

    # its own process group, so that stopping it reaches the uvicorn workers it starts
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def _stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        _signal_group(proc.pid, signal.SIGTERM)  # workers left behind by a server that exited on its own


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ------------------------------------------------------------------------------------------ clients


def credentials(env: dict[str, str] | None = None, home: Path | None = None) -> tuple[str, str] | None:
    """(user, password) as MLflow's client finds them: `MLFLOW_TRACKING_USERNAME` / `_PASSWORD`, else
    `~/.mlflow/credentials` ([mlflow] mlflow_tracking_username / mlflow_tracking_password); None if absent."""
    import configparser

    env = os.environ if env is None else env
    user, password = env.get(USER_VAR), env.get(PASSWORD_VAR)
    path = (home or Path.home()) / ".mlflow" / "credentials"
    if not (user and password) and path.is_file():
        cfg = configparser.ConfigParser()
        cfg.read(path)
        if cfg.has_section("mlflow"):
            user = user or cfg["mlflow"].get(USER_VAR.lower())
            password = password or cfg["mlflow"].get(PASSWORD_VAR.lower())
    return (user, password) if user and password else None


def check_access(uri: str, timeout: float = 10.0) -> None:
    """One authenticated read of an HTTP tracking server: a one-line `UserError` when nothing answers,
    the login is missing or refused, or the user may not read; nothing for non-HTTP stores."""
    if not tracking.is_http(uri):
        return
    req = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1")
    creds = credentials()
    if creds is not None:
        token = b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return
    except urllib.error.HTTPError as e:
        if e.code == 401:
            what = "was refused" if creds else "is missing"
            raise UserError(
                f"--tracking-uri {uri}: the server asks for a login and it {what} (HTTP 401); "
                f"set {USER_VAR} and {PASSWORD_VAR}"
            ) from None
        if e.code == 403:
            raise UserError(
                f"--tracking-uri {uri}: user '{creds[0] if creds else '?'}' may not read experiments (HTTP 403)"
            ) from None
        raise UserError(f"--tracking-uri {uri}: the server answered HTTP {e.code} ({e.reason})") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(
            f"--tracking-uri {uri}: no MLflow server answers there ({reason}); "
            "start `fgdsr tracking-server` or fix the URI"
        ) from None
