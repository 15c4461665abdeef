"""Shared fixtures: where the standard data sets and official weights are (skip with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _shared_datasets() -> Path | None:
    root = os.environ.get("FGDSR_DATA_ROOT")
    for cand in ([Path(root)] if root else []) + [SHARED / "datasets"]:
        if (cand / "Set5" / "HR").is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding Set5/Set14/T91/BSD200 (HR); skips when a fresh clone has no ../shared/datasets."""
    root = _shared_datasets()
    if root is None:
        pytest.skip("standard data sets absent: set FGDSR_DATA_ROOT or provide ../shared/datasets/Set5/HR")
    return root


@pytest.fixture(scope="session")
def official_weights() -> Path:
    """Folder with the authors' LapSRN_x{2,4,8}.mat; skips when absent (users fetch them from the authors)."""
    path = SHARED / "weights" / "lapsrn-official"
    if not (path / "LapSRN_x4.mat").is_file():
        pytest.skip("official LapSRN weights absent: ../shared/weights/lapsrn-official/LapSRN_x4.mat")
    return path


@pytest.fixture(autouse=True)
def _headless_matplotlib(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
