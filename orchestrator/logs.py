"""The terminal speaks fgdsr: what Ray, MLflow, Optuna … print goes to a log file in the output folder.

Inside `library_output(log_file)`, Python's `sys.stdout`/`sys.stderr` (Tune's experiment box, its TensorBoard
hint, warnings) and the loggers of the libraries (Ray's token warning, MLflow's "Creating initial MLflow database
tables") write to `log_file`. fgdsr's own console must be made before entering (it keeps the terminal).
`verbose=True` leaves everything on the terminal. Re-entrant: a nested call (the pipeline's sweep) writes to
the outer call's file.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from pathlib import Path

# Loggers that may print on the driver; each is re-pointed at the file while the job runs.
LIBRARY_LOGGERS = ("", "ray", "mlflow", "alembic", "optuna", "urllib3", "filelock", "accelerate", "torch",
                   "matplotlib", "PIL", "py.warnings")  # fmt: skip
PRELOAD = ("ray", "ray.tune", "mlflow", "optuna")
_active: list[Path] = []


@contextlib.contextmanager
def library_output(
    log_file: str | Path, verbose: bool = False, preload: tuple[str, ...] = PRELOAD
) -> Iterator[Path | None]:
    """Send library output to `log_file` (appended) for the duration; yields the file (None when verbose).

    `preload`: libraries imported first, so the handlers they install at import are swapped out (and back)
    like the others, not created inside the redirect and left pointing at a closed file.
    """
    if verbose:
        yield None
        return
    if _active:  # an outer job already redirects
        yield _active[-1]
        return
    for name in preload:
        importlib.import_module(name)
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1, encoding="utf-8") as f:
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        saved = []
        for name in LIBRARY_LOGGERS:
            log = logging.getLogger(name)
            saved.append((log, log.handlers[:], log.propagate, log.level))
            log.handlers, log.propagate = [handler], False
            if name in ("ray", "mlflow"):
                log.setLevel(logging.INFO)
        logging.captureWarnings(True)
        _active.append(path)
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield path
        finally:
            _active.pop()
            logging.captureWarnings(False)
            for log, handlers, propagate, level in saved:
                log.handlers, log.propagate = handlers, propagate
                log.setLevel(level)
