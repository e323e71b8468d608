import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cli() -> list[str]:
    """The installed ``hybrid-policy`` console script of the interpreter running the tests."""
    exe = Path(sys.executable).with_name("hybrid-policy")
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the package (make setup)")
    return [str(exe)]


@pytest.fixture(autouse=True)
def _quiet_tqdm(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    yield
