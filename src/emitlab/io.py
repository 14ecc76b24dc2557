"""Atomic writes: a crash, a full disk or a bad value never leaves a half-written file or folder.

Every writer fills a temporary sibling of the destination (same folder, so the same file system)
and renames it over the destination only once it is complete; on failure the temporary is
removed and whatever was at the destination stays as it was. Readers (``emitlab compare``, the
report, a resumed run) therefore see either the old file or the new one.

    atomic_write_json(run / "metrics.json", metrics)
    with atomic_path(run / "predictions.npz") as tmp:   # for writers that take a path
        np.savez_compressed(tmp, **arrays)
    with atomic_folder(run / "model") as tmp:           # a folder, replaced as a whole
        model.save(tmp)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_write_text", "atomic_write_bytes", "atomic_write_json", "atomic_path", "atomic_folder",
           "to_jsonable"]


def to_jsonable(obj: Any) -> Any:
    """``obj`` with dataclasses turned into dicts, tuples into lists, paths and dict keys into
    strings: what ``json.dumps`` takes."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``dest`` (same suffix, so ``np.savez`` and ``savefig``
    keep the name); on success it is renamed over ``dest``, on failure removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", suffix=dest.suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _mode(dest, 0o666))  # mkstemp's file is owner-only
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` (dataclasses and paths included) as indented UTF-8 JSON. It is serialised before
    any file is touched, so a value that cannot be written leaves the old file as it was."""
    text = json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text)


@contextlib.contextmanager
def atomic_folder(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest`` to fill; on success it takes ``dest``'s place
    (an existing ``dest`` is replaced), on failure it is removed and ``dest`` is untouched."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, _mode(dest, 0o777))  # mkdtemp's folder is owner-only
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``. A folder cannot be renamed over a non-empty one, so an existing
    ``dest`` is first moved aside, and moved back if the second rename fails."""
    if not dest.exists() and not dest.is_symlink():
        os.rename(tmp, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def _mode(dest: Path, default: int) -> int:
    """The permissions ``dest`` has, or those a new file or folder gets under the umask."""
    if dest.exists():
        return dest.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return default & ~umask
