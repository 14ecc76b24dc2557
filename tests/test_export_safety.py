"""Opening a model file runs no code from it, and a damaged or foreign export ends with one line
naming the file and what is wrong (issue: hardening, item 2)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from emitlab.cli import main
from emitlab.errors import ModelFormatError
from emitlab.export import check_zip
from emitlab.inference import EmotionClassifier


@pytest.fixture()
def export_copy(tiny_export, tmp_path) -> Path:
    dest = tmp_path / "model"
    shutil.copytree(tiny_export, dest)
    return dest


def _meta(folder: Path) -> dict:
    return json.loads((folder / "emitlab.json").read_text())


def _write_meta(folder: Path, meta: dict) -> None:
    (folder / "emitlab.json").write_text(json.dumps(meta))


def _expect_one_line(capsys, model: Path, *words: str) -> None:
    assert main(["predict", "--model", str(model), "ciao"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_no_pickle_anywhere_in_an_export(tiny_export):
    for path in tiny_export.rglob("*"):
        if path.is_file():
            assert path.suffix in {".json", ".npy", ".safetensors", ".txt", ".model", ".npz"} or \
                path.name in {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}, path
            assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"


@pytest.mark.parametrize("version,word", [(1, "older"), (3, "newer"), (None, "format")])
def test_format_version_is_checked(export_copy, capsys, version, word):
    meta = _meta(export_copy)
    meta["format_version"] = version
    _write_meta(export_copy, meta)
    with pytest.raises(ModelFormatError, match=word):
        EmotionClassifier.from_pretrained(export_copy)
    _expect_one_line(capsys, export_copy, "emitlab.json", word)


def test_broken_metadata(export_copy, capsys):
    (export_copy / "emitlab.json").write_text("{not json")
    _expect_one_line(capsys, export_copy, "emitlab.json", "not valid JSON")


def test_labels_that_do_not_match_the_weights(export_copy, capsys):
    meta = _meta(export_copy)
    meta["labels"] = meta["labels"][:-1]
    _write_meta(export_copy, meta)
    _expect_one_line(capsys, export_copy, "thresholds for 9 labels")
    meta["decoder"]["thresholds"] = meta["decoder"]["thresholds"][:-1]
    meta["decoder"]["label_names"] = meta["labels"]
    _write_meta(export_copy, meta)
    _expect_one_line(capsys, export_copy, "do not match")


def test_weights_cut_short(export_copy, capsys):
    member = _meta(export_copy)["members"][0]
    fold = export_copy / member["folds"][0]["path"]
    weights = fold / ("model.safetensors" if member["kind"] == "transformer" else "W.npy")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _expect_one_line(capsys, export_copy, "fold-0", weights.name if member["kind"] != "transformer" else "transformer")


def test_missing_member_folder_and_unknown_kind(export_copy, capsys):
    meta = _meta(export_copy)
    meta["members"][0]["folds"][0]["spec"]["kind"] = "pickled"
    _write_meta(export_copy, meta)
    _expect_one_line(capsys, export_copy, "unknown member kind 'pickled'")
    shutil.rmtree(export_copy / "members" / meta["members"][-1]["name"])
    meta = _meta(export_copy)
    meta["members"][0]["folds"][0]["spec"]["kind"] = meta["members"][0]["kind"]
    _write_meta(export_copy, meta)
    _expect_one_line(capsys, export_copy, "missing")


def test_not_a_zip_and_not_an_export(tmp_path, capsys):
    bogus = tmp_path / "model.zip"
    bogus.write_text("hello")
    _expect_one_line(capsys, bogus, "not a zip")
    _expect_one_line(capsys, tmp_path, "not an emitlab export")
    _expect_one_line(capsys, tmp_path / "nowhere", "no such file")


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_zip_slip_is_refused(tmp_path, capsys, member):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("emitlab.json", "{}")
        zf.writestr(member, "x")
    _expect_one_line(capsys, bad, "unsafe path")
    assert not (tmp_path.parent / "evil.txt").exists()


def test_oversized_zip_is_refused(tmp_path):
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("emitlab.json", "{}")
        zf.writestr("zeros.bin", b"\0" * 2_000_000)  # compresses to a few KB
    with zipfile.ZipFile(big) as zf, pytest.raises(ModelFormatError, match="expands to more than"):
        check_zip(zf, str(big), max_bytes=1_000_000)


def test_a_zip_that_cannot_be_extracted_on_its_disk_says_so(tiny_export, tmp_path, monkeypatch, capsys):
    zipped = Path(shutil.make_archive(str(tmp_path / "model"), "zip", tiny_export))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    _expect_one_line(capsys, zipped, "GiB free; free some space")
    assert not list(tmp_path.glob("*.unzipped")) and not list(tmp_path.glob(".model.unzipped.tmp-*"))
    monkeypatch.undo()
    assert EmotionClassifier.from_pretrained(zipped).predict_proba(["ciao"]).shape[0] == 1


def _member_files(export: Path) -> list[str]:
    """Every file of every member fold of an export, relative to it."""
    return sorted(str(p.relative_to(export)) for p in (export / "members").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def ensemble_files(tiny_ensemble_export) -> list[str]:
    return _member_files(tiny_ensemble_export)


@pytest.mark.parametrize("damage", ["truncated", "emptied", "deleted"])
def test_every_damaged_member_file_ends_in_one_line_naming_it(tiny_ensemble_export, ensemble_files, tmp_path,
                                                             capsys, damage):
    """Each file of each member fold of a whole-ensemble export (TF-IDF, lexicon, transformer folds), damaged
    in turn: ``emitlab predict`` exits 2 with one line naming that file (or, for a file that loading never
    reads, still predicts)."""
    kinds = {Path(f).parts[1] for f in ensemble_files}
    assert {"tfidf", "lexicon", "transformer"} <= kinds
    unread = []
    for rel in ensemble_files:
        model = tmp_path / rel.replace("/", "_")
        shutil.copytree(tiny_ensemble_export, model)
        path = model / rel
        if damage == "deleted":
            path.unlink()
        else:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
        code = main(["predict", "--model", str(model), "ciao"])
        captured = capsys.readouterr()
        err = captured.err.strip()
        if code == 0:
            unread.append(rel)
            continue
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (rel, err)
        assert Path(rel).name in err, (rel, err)
        shutil.rmtree(model)
    # the files loading never reads are the tokenizer's extras, none of the weights or arrays
    assert not [f for f in unread if f.endswith((".safetensors", ".npy", "network.json", "fold.json",
                                                   "tokenizer.json"))], unread


@pytest.mark.parametrize("damage", ["truncated", "garbled inside"])
def test_a_large_tokenizer_file_is_checked_cheaply_and_still_named(tiny_ensemble_export, tmp_path, capsys,
                                                                    monkeypatch, damage):
    """A tokenizer.json over the full-parse size (XLM-R's is 17 MB) gets the quick check (UTF-8, outer
    braces) instead of a Python JSON parse; a cut one is named by that check, one damaged inside by the
    tokenizer's loader, each in one line naming the file."""
    from emitlab.members.transformer import member as transformer_member

    monkeypatch.setattr(transformer_member, "FULL_PARSE_BYTES", 0)  # the tiny file takes the large-file path
    export_copy = tmp_path / "model"
    shutil.copytree(tiny_ensemble_export, export_copy)
    assert main(["predict", "--model", str(export_copy), "ciao"]) == 0  # an intact file passes the quick check
    capsys.readouterr()
    path = sorted(export_copy.rglob("tokenizer.json"))[0]  # the first fold loaded: no weights load before it
    text = path.read_text(encoding="utf-8")
    if damage == "truncated":
        path.write_text(text[: len(text) // 2], encoding="utf-8")
        _expect_one_line(capsys, export_copy, str(path), "not valid JSON")
    else:
        middle = len(text) // 2
        path.write_text(text[:middle] + '"]]]not json[[[' + text[middle:], encoding="utf-8")
        _expect_one_line(capsys, export_copy, str(path), "cannot load the tokenizer")
