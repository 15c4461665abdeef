"""Shared by the server and load tests: a real PostgreSQL and a real `fgdsr tracking-server`, started here.

PostgreSQL comes from the `pgserver` wheel (PostgreSQL 16 binaries installed by pip with the `dev` extra),
so a fresh clone needs no Docker and no system package; a PostgreSQL on PATH (Debian's `initdb`) is the
fallback. PostgreSQL refuses to run as root (CI here runs as root): then initdb and the server run as the
unprivileged `nobody`, in a folder of their own under the system temp dir.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FGDSR = [sys.executable, "-m", "orchestrator.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_server_args(port: int, store_uri: str, artifacts: str) -> list[str]:
    """`fgdsr tracking-server` in cluster mode, exactly as deploy/docker-compose.yml and docs/CLUSTER.md
    write it (tests/test_deploy_files.py checks that they agree)."""
    return ["tracking-server", "--host", "0.0.0.0", "--port", str(port)] + [
        "--backend-store-uri",
        store_uri,
        "--artifacts-destination",
        artifacts,
    ]


def postgres_bindir() -> Path | None:
    """PostgreSQL's bin folder: the pgserver wheel's, else initdb on PATH or Debian's."""
    spec = importlib.util.find_spec("pgserver")  # found, not imported: importing it takes a lock file
    if spec is not None and spec.origin:
        bindir = Path(spec.origin).parent / "pginstall" / "bin"
        if (bindir / "initdb").is_file():
            return bindir
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(debian[-1]).parent if debian else None


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL on 127.0.0.1 with one database and a password-protected user."""

    port: int
    user: str
    password: str
    database: str
    bindir: Path

    @property
    def uri(self) -> str:
        """The store URI without the password (the server gets it through PGPASSWORD)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def dump(self) -> str:
        """`pg_dump` of the database as SQL text (schema + every row)."""
        out = subprocess.run(
            [
                str(self.bindir / "pg_dump"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                self.database,
            ],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout


def _traversable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


@contextmanager
def running_postgres(password: str, database: str = "mlflow") -> Iterator[Postgres]:
    """initdb + postgres on a free port in a fresh folder; fast shutdown and removal afterwards."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL: install the dev extra (pgserver) or Debian's postgresql")
    folder = Path(tempfile.mkdtemp(prefix="fgdsr-pg-"))
    run_as = None
    if os.geteuid() == 0:  # initdb and postgres refuse root
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and no 'nobody' user to run PostgreSQL as")
        run_as = "nobody"
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        if not _traversable_by_others(bindir):  # e.g. a checkout under /root: use a readable copy
            shutil.copytree(bindir.parent, folder / "pginstall", symlinks=True)
            bindir = folder / "pginstall" / "bin"
    pwfile = folder / "pw"
    pwfile.write_text(password + "\n")
    if run_as:
        os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)
    pwfile.chmod(0o600)
    data = folder / "data"
    user = "mlflow"
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", user, "--pwfile", str(pwfile)]
        + ["--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
        user=run_as,
        cwd=folder,
        capture_output=True,
        check=True,
        timeout=120,
    )
    pwfile.unlink()
    port = free_port()
    log = open(folder / "postgres.log", "w")  # noqa: SIM115 (closed below)
    # fsync off: a test database; unix socket in the folder (not /var/run/postgresql)
    cmd = [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(folder)]
    proc = subprocess.Popen(
        cmd + ["-c", "fsync=off", "-c", "max_connections=200"],
        user=run_as,
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pg = Postgres(port=port, user=user, password=password, database=database, bindir=bindir)
    try:
        _wait_for_postgres(pg, proc, folder)
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database],
            env={**os.environ, "PGPASSWORD": password},
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield pg
    finally:
        stop_group(proc, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for clients)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_postgres(pg: Postgres, proc: subprocess.Popen, folder: Path) -> None:
    deadline = time.time() + 60
    while True:
        ready = subprocess.run(
            [str(pg.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port)], capture_output=True
        )
        if ready.returncode == 0:
            return
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError("PostgreSQL did not start: " + (folder / "postgres.log").read_text()[-2000:])
        time.sleep(0.2)


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a process started with start_new_session=True and everything in its group."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    try:  # children that outlived the leader
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    """The status code of a GET (no exception for 4xx/5xx)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@contextmanager
def serving(
    args: list[str], port: int, env: dict[str, str], log: Path, timeout: float = 180
) -> Iterator[str]:
    """Run `fgdsr ARGS` (a server) until GET /health answers on `port`; yields its URL; stops its group."""
    out = open(log, "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        FGDSR + args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while http_status_or_none(f"{url}/health") != 200:
            if proc.poll() is not None:
                raise AssertionError(f"`fgdsr {' '.join(args)}` exited: {log.read_text()[-3000:]}")
            if time.time() > deadline:
                raise AssertionError(
                    f"no answer on {url}/health after {timeout:.0f} s: {log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)
        out.close()


def http_status_or_none(url: str) -> int | None:
    try:
        return http_status(url)
    except OSError:
        return None


def grep_tree(root: Path, needle: str) -> list[str]:
    """Files under `root` whose bytes contain `needle` (sockets, fifos and vanished files skipped)."""
    hits = []
    data = needle.encode()
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            try:
                if p.is_file() and not p.is_symlink() and data in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


VAL_KEYS = ("val_psnr", "val_ssim")


def expected_points(exp_dir: Path, steps: int) -> dict[str, dict[str, list[int]]]:
    """trial id -> metric name -> the steps MLflow must hold, from the trial's Tune reports (result.json in
    the Tune storage, written by Ray, not MLflow): every `train/<name>` metric at every step 1..`steps`
    (log_every 1), `val_psnr` / `val_ssim` at every reported validation step."""
    out = {}
    for result_json in exp_dir.glob("*/result.json"):
        reports = [json.loads(line) for line in result_json.read_text().splitlines() if line.strip()]
        assert reports, result_json
        train = sorted({k[len("train/") :] for r in reports for k in r if k.startswith("train/")})
        want = {k: list(range(1, steps + 1)) for k in train}
        want.update({k: sorted(r["step"] for r in reports) for k in VAL_KEYS})
        out[reports[0]["trial_id"]] = want
    return out


def count_points(uri: str, result, exp_dir: Path, steps: int) -> tuple[int, int]:
    """(metric points expected, found) over a sweep's child runs; asserts that every run is FINISHED and
    every history holds exactly the expected steps, each once."""
    from orchestrator import tracking

    c = tracking.client(uri)
    runs = tracking.child_runs(uri, result.experiment_id, result.parent_run_id)
    expected = expected_points(exp_dir, steps)
    assert len(runs) == len(expected) and all(r.info.status == "FINISHED" for r in runs)
    n_expected = n_found = 0
    for run in runs:
        want = expected[run.data.tags[tracking.TRIAL_TAG]]
        assert {"lr", "it_per_s"} <= set(want) and len(want) >= 5, want  # and a loss term at least
        run_id = run.info.run_id
        for key, key_steps in want.items():
            found = sorted(m.step for m in tracking.retry(lambda r=run_id, k=key: c.get_metric_history(r, k)))
            assert found == key_steps, (run_id, key, found, key_steps)
            n_expected += len(key_steps)
            n_found += len(found)
    return n_expected, n_found
