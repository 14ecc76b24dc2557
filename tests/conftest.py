"""Shared fixtures: where the real EMit data lives (tests skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The extra corpora (MultiEmotions-It, XED) are read from $EMITLAB_EXTRA_DATA, else ../shared/data: tests
# never pick up the real ones by accident (the out-of-domain proxy would score them in every tiny run);
# those that want them use the fixtures below.
os.environ["EMITLAB_EXTRA_DATA"] = str(REPO / "tests" / "no-extra-data-here")


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
def shared_extra_dir() -> Path:
    """The real extra corpora (../shared/data: multiemotions_it/, xed/); skips when absent."""
    path = REPO.parent / "shared" / "data"
    if not (path / "multiemotions_it" / "MultiEmotions-It.tsv").is_file() or not (path / "xed").is_dir():
        pytest.skip(f"extra corpora not found under {path} (multiemotions_it/, xed/)")
    return path


@pytest.fixture(scope="session")
def extra_folder(tmp_path_factory, emit_folder) -> Path:
    """Made-up corpora shaped like MultiEmotions-It and XED (tests/synthetic.py), some of whose
    texts repeat the synthetic EMit folder's test and out-of-domain texts."""
    from synthetic import write_extra_folder

    return write_extra_folder(tmp_path_factory.mktemp("extra"), emit=emit_folder)


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


#: Flags that make the tiny BERT learn the synthetic cues in a few seconds.
TINY_TRAIN = ["--epochs", "3", "--batch-size", "16", "--learning-rate", "3e-3", "--head-learning-rate", "1e-2",
              "--max-length", "48", "--report-to", "none", "--no-freeze-word-embeddings", "--logging-steps", "5"]
#: Cross-fitting small enough for tests: 3 folds for the cheap members, 2 for the transformer.
TINY_FOLDS = ["--folds", "3", "--transformer-folds", "2", "--nested-folds", "3"]


@pytest.fixture(scope="session")
def tiny_run(tiny_model, emit_folder, tmp_path_factory) -> Path:
    """One ``emitlab run`` (every member, cross-fitted, combined, exported, no report) shared by
    the tests that need a trained run folder or a whole-ensemble export."""
    from emitlab.cli import main

    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["-q", "run", "--data", str(emit_folder), "--model", str(tiny_model), "--out", str(out),
                 "--no-report"] + TINY_TRAIN + TINY_FOLDS) == 0
    return out


@pytest.fixture(scope="session")
def tiny_export(tiny_run) -> Path:
    """The whole-ensemble export of :func:`tiny_run` (read-only: copy it before changing it)."""
    return tiny_run / "model"


@pytest.fixture(scope="session")
def tiny_ensemble_export(tiny_export, tiny_run, tmp_path_factory) -> Path:
    """A whole-ensemble export with transformer folds (read-only). ``tiny_export`` is the run's
    *best* model, which on the easy synthetic data may be a cheap member alone; then the run's
    stacker over every member is exported beside it."""
    from test_onnx import has_transformer, whole_ensemble_export

    if has_transformer(tiny_export):
        return tiny_export
    return whole_ensemble_export(tiny_run, tmp_path_factory.mktemp("ensemble") / "model")


# One headless Chromium for every browser test (tests/browser.py): the session-scoped
# ``chromium`` and the per-test page factory ``browser_page(viewport=...) -> Page``.
from browser import browser_page, chromium  # noqa: E402,F401
