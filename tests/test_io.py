"""emitlab.io: atomic files and folders leave the old version intact, and no temporaries, on failure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from emitlab.io import atomic_folder, atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


class Boom(Exception):
    pass


class HalfDict(dict):
    """A mapping that yields one item, then fails: to_jsonable raises halfway through the object."""

    def items(self):
        yield "ok", 1
        raise Boom("midway")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_json_text_bytes(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"path": Path("x"), "città": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8")) == {"path": "x", "città": [1, 2]}
    assert "città" in (tmp_path / "a.json").read_text(encoding="utf-8")  # ensure_ascii=False
    atomic_write_text(tmp_path / "sub" / "b.txt", "ciao")
    atomic_write_bytes(tmp_path / "c.bin", b"\0\1")
    assert (tmp_path / "sub" / "b.txt").read_text() == "ciao" and (tmp_path / "c.bin").read_bytes() == b"\0\1"
    assert _names(tmp_path) == ["a.json", "c.bin", "sub"]


@pytest.mark.parametrize("bad", [HalfDict(), {"ok": 1, "bad": object()}])
def test_failed_serialisation_keeps_the_old_file(tmp_path, bad):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"old": True})
    with pytest.raises((Boom, TypeError)):
        atomic_write_json(path, {"nested": [bad]})
    assert json.loads(path.read_text()) == {"old": True}
    assert _names(tmp_path) == ["metrics.json"]


def test_failed_writer_keeps_the_old_file(tmp_path):
    path = tmp_path / "predictions.npz"
    np.savez_compressed(path, a=np.arange(3))
    with pytest.raises(Boom), atomic_path(path) as tmp:
        tmp.write_bytes(b"half a zip")
        raise Boom("disk full")
    assert np.load(path)["a"].tolist() == [0, 1, 2]
    assert _names(tmp_path) == ["predictions.npz"]


def test_atomic_path_keeps_the_suffix_and_the_usual_permissions(tmp_path):
    path = tmp_path / "predictions.npz"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npz"
        np.savez_compressed(tmp, a=np.ones(2))  # numpy appends .npz to any other name
    assert np.load(path)["a"].tolist() == [1.0, 1.0] and _names(tmp_path) == ["predictions.npz"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0600


def test_atomic_folder_replaces_an_existing_folder(tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "old.bin").write_text("old")
    with atomic_folder(dest) as tmp:
        assert not (tmp / "old.bin").exists()
        (tmp / "new.bin").write_text("new")
    assert _names(dest) == ["new.bin"] and _names(tmp_path) == ["model"]


def test_failed_atomic_folder_keeps_the_old_folder(tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "old.bin").write_text("old")
    with pytest.raises(Boom), atomic_folder(dest) as tmp:
        (tmp / "new.bin").write_text("half")
        raise Boom("crash while saving")
    assert _names(dest) == ["old.bin"] and _names(tmp_path) == ["model"]
    with pytest.raises(Boom), atomic_folder(tmp_path / "fresh"):
        raise Boom("crash")
    assert _names(tmp_path) == ["model"]


