"""Export folders: the whole ensemble in one folder (and a zip), written atomically, loaded
without running any code from the files.

Layout (``format_version`` 2)::

    model/
      emitlab.json                 labels, cleaning, combiner, decoder, members, metrics, versions
      members/<name>/fold-<i>/     one folder per fold model of each member:
                                   tfidf/lexicon: JSON + .npy arrays; transformer: a HF folder
                                   (config.json + model.safetensors + tokenizer) + classifier.safetensors

Nothing in an export is pickled: arrays are ``.npy`` read with ``allow_pickle=False`` or
safetensors, the rest is JSON; ``from_pretrained`` never trusts remote code. A zip is checked
before it is extracted (no absolute paths, no ``..``, bounded uncompressed size).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from emitlab.errors import DiskSpaceError, ModelFormatError, SettingsError
from emitlab.settings import CleaningConfig

META_FILE = "emitlab.json"
FORMAT_VERSION = 2
#: The largest uncompressed export a zip may expand to (a me5-small ensemble of 5 folds is ~2.5 GB).
MAX_UNZIPPED_BYTES = 16 * 2**30


def write_export(dest: Path, meta: dict[str, Any], member_folders: dict[str, list[Path]],
                 make_zip: bool = True) -> Path:
    """Put each member's fold folders into ``dest/members/<name>/fold-<i>``, write
    ``emitlab.json`` (with ``format_version``, versions and the members' specs), then rename
    the finished folder into place and zip it.

    The fold files are hard-linked where the file system allows it (else copied): a run's
    weights are then stored once for ``members/`` and ``model/``, not twice. This is safe
    because nothing rewrites such a file in place: cross-fitting swaps in a whole new fold
    folder and every later writer (``network.json``, ONNX files) replaces its file."""
    from emitlab.engine.crossfit import FOLD_FILE, PREDICTIONS_FILE
    from emitlab.io import atomic_path
    from emitlab.runs import versions

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        members = []
        for name, folders in member_folders.items():
            folds = []
            for i, src in enumerate(folders):
                rel = f"members/{name}/fold-{i}"
                shutil.copytree(src, tmp / rel, ignore=shutil.ignore_patterns(PREDICTIONS_FILE, FOLD_FILE, "work"),
                                copy_function=link_or_copy)
                spec = json.loads((Path(src) / FOLD_FILE).read_text(encoding="utf-8"))["spec"]
                folds.append({"path": rel, "spec": spec})
            members.append({"name": name, "kind": folds[0]["spec"]["kind"], "folds": folds})
        full = {"format_version": FORMAT_VERSION, **meta, "members": members, "versions": versions()}
        (tmp / META_FILE).write_text(json.dumps(full, indent=2, ensure_ascii=False), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_zip:
        with atomic_path(dest.with_name(dest.name + ".zip")) as zip_tmp:
            # stored, not deflated: weights barely compress and deflating 0.5 GB takes a minute
            with zipfile.ZipFile(zip_tmp, "w", zipfile.ZIP_STORED) as zf:
                for path in sorted(dest.rglob("*")):
                    if path.is_file():
                        zf.write(path, path.relative_to(dest).as_posix())
    return dest


def link_or_copy(src: str, dst: str) -> str:
    """``shutil.copytree``'s ``copy_function``: a hard link, or a copy where links are refused
    (another file system, a file system without links)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def read_meta(folder: Path) -> dict[str, Any]:
    """``emitlab.json`` of an export folder, checked: readable JSON, a known format version,
    the fields a loader needs."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise ModelFormatError(f"{folder}: not an emitlab export (no {META_FILE})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        hint = ("written by an older emitlab; re-export it with this version, or load it with the emitlab that wrote it"
                if isinstance(version, int) and version < FORMAT_VERSION else
                "written by a newer emitlab; upgrade emitlab to load it")
        raise ModelFormatError(f"{path}: export format {version!r}, "
                               f"this emitlab reads format {FORMAT_VERSION} ({hint})")
    for key in ("labels", "decoder", "combiner", "members", "cleaning"):
        if key not in meta:
            raise ModelFormatError(f"{path}: missing field {key!r}")
    try:
        CleaningConfig.from_dict(meta["cleaning"])
    except SettingsError as exc:
        raise ModelFormatError(f"{path}: field 'cleaning' does not hold valid cleaning settings ({exc})") from None
    n = len(meta["labels"])
    if len(meta["decoder"].get("thresholds", [])) != n:
        raise ModelFormatError(f"{path}: {len(meta['decoder'].get('thresholds', []))} thresholds for {n} labels")
    return meta


def resolve_export(path: str | Path) -> Path:
    """The export folder for ``path`` (a folder, or its .zip extracted once beside it)."""
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"{path}: no such file or folder")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ModelFormatError(f"{path}: not a zip file and not an export folder")
        path = _unzip_cached(path)
    read_meta(path)
    return path


def check_zip(zf: zipfile.ZipFile, name: str, max_bytes: int = MAX_UNZIPPED_BYTES) -> int:
    """Refuse members with absolute paths or ``..`` (zip-slip), links, and over-large totals;
    returns the total uncompressed size."""
    total = 0
    for info in zf.infolist():
        p = PurePosixPath(info.filename.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
            raise ModelFormatError(f"{name}: unsafe path {info.filename!r} in the zip (outside the export folder)")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise ModelFormatError(f"{name}: {info.filename!r} is a symbolic link; exports hold plain files")
        total += info.file_size
        if total > max_bytes:
            raise ModelFormatError(f"{name}: expands to more than {max_bytes / 2**30:.0f} GiB; refusing to extract")
    return total


def _unzip_cached(path: Path) -> Path:
    """Extract an exported zip next to itself once (``<name>.unzipped``) and reuse it."""
    target = path.with_name(path.stem + ".unzipped")
    stamp = target / ".source-mtime"
    mtime = str(path.stat().st_mtime_ns)
    if stamp.is_file() and stamp.read_text() == mtime:
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=path.parent))
    try:
        with zipfile.ZipFile(path) as zf:
            size = check_zip(zf, str(path))
            free = shutil.disk_usage(tmp).free
            if free < size:
                raise DiskSpaceError(f"{path}: extracting it beside itself needs {size / 2**30:.2f} GiB, its disk has "
                                     f"{free / 2**30:.2f} GiB free; free some space, or unzip it elsewhere and load "
                                     "that folder")
            zf.extractall(tmp)
        (tmp / ".source-mtime").write_text(mtime)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelFormatError(f"{path}: damaged zip ({exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
