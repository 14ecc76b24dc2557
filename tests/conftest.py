"""Shared fixtures: where the real EMit data lives (tests skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def emit_dir() -> Path:
    env = os.environ.get("EMITLAB_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "emit"


@pytest.fixture(scope="session")
def emit_data_dir() -> Path:
    path = emit_dir()
    if not (path / "emit_train_A.csv").is_file():
        pytest.skip(f"EMit data not found at {path} (set EMITLAB_DATA to the folder with emit_train_A.csv)")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random BERT with a small local WordPiece vocabulary (tests/tiny.py)."""
    from tiny import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def emit_folder(tmp_path_factory) -> Path:
    """A made-up EMit-shaped folder with learnable cues (tests/synthetic.py)."""
    from synthetic import write_emit_folder

    return write_emit_folder(tmp_path_factory.mktemp("emit"))
