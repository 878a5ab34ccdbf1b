"""Shared fixtures: where the real data lives, small real samples of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``../shared`` beside the checkout (override with MATFUSE_SHARED)."""
    return Path(os.environ.get("MATFUSE_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_dir() / "data"
    if not path.is_dir():
        pytest.fail(f"real data not found at {path}; set MATFUSE_SHARED to the shared/ folder")
    return path


@pytest.fixture(scope="session")
def mp_csv(shared_data: Path) -> Path:
    return shared_data / "mp_mtcgcnn" / "mp_mtcgcnn_33064.csv.gz"


@pytest.fixture(scope="session")
def mp_rows(mp_csv: Path):
    """The first 60 real MP rows (CIF + targets) as a DataFrame."""
    import pandas as pd

    return pd.read_csv(mp_csv, nrows=60)
