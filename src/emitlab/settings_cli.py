"""Settings groups on the command line and in config files.

Each field of a settings dataclass (:mod:`emitlab.settings`) becomes a ``--kebab-case`` option
(as with HF's ``HfArgumentParser``): ``metadata["help"]`` is its ``--help`` text,
``metadata["choices"]`` its choices and ``metadata["flag"]`` renames it. A config file (JSON or
YAML, ``--config FILE``) holds one section per group, named as in
:func:`~emitlab.settings.section_name`, and replaces the defaults; flags given on the command
line win over the file. The file is checked when it is read (sections, keys and every value),
and every error names it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

from emitlab.errors import SettingsError
from emitlab.settings import check_value, field_type, section_name, type_hints

#: Top-level keys of a run's ``config.json`` that are not settings groups (it is a valid ``--config``).
NON_SECTION_KEYS = frozenset({"command", "versions", "git"})


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """Add one ``--kebab-case`` option per field of ``cls`` to ``parser`` (defaults suppressed
    so that :func:`build_configs` can tell given flags from defaults)."""
    group = parser.add_argument_group(title or f"{section_name(cls)} settings")
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False:
            continue
        tp, is_list, _ = field_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_text = f.metadata.get("help", "")
        help_text += f" (default: {default})" if default not in (None, "", []) else ""
        kwargs: dict[str, Any] = {"dest": f"{section_name(cls)}.{f.name}", "help": help_text,
                                  "default": argparse.SUPPRESS}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp
            kwargs["metavar"] = f.metadata.get("metavar", f.name.upper())
            if is_list and f.metadata.get("repeat"):  # --flag a --flag b: one value a flag, all kept
                kwargs.update(nargs=1, action="extend")
            elif is_list:
                kwargs["nargs"] = "+"
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
                kwargs.pop("metavar")
        group.add_argument(f.metadata.get("flag", "--" + f.name.replace("_", "-")), **kwargs)


def read_config_file(path: str | Path, classes: list[type]) -> dict:
    """The sections of a JSON or YAML config file (``.yaml``/``.yml`` is YAML, anything else
    JSON), checked against the settings groups ``classes``: a missing or unreadable file, a
    syntax error, an unknown section or key, and a value of the wrong type, choice or range
    are :class:`SettingsError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"--config {path}: no such file") from None
    except UnicodeDecodeError:
        raise SettingsError(f"--config {path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise SettingsError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{path}: not valid JSON ({exc})") from None
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of sections (e.g. 'train:', 'data:'), "
                            f"got {type(data).__name__}")
    groups = {section_name(c): c for c in classes}
    unknown = sorted(str(k) for k in data if k not in groups and k not in NON_SECTION_KEYS)
    if unknown:
        raise SettingsError(f"{path}: unknown section(s) {', '.join(map(repr, unknown))}"
                            f"{_did_you_mean(unknown, groups)}; this command reads {', '.join(groups)}")
    for sec, cls in groups.items():
        values = data.get(sec)
        if values is None:  # absent, or an empty section in YAML
            continue
        if not isinstance(values, dict):
            raise SettingsError(f"{path}: section {sec!r} must be a mapping of settings, got {values!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        bad = sorted(str(k) for k in values if k not in names)
        if bad:
            raise SettingsError(f"{path}: section {sec!r} has unknown key(s) {', '.join(map(repr, bad))}"
                                f"{_did_you_mean(bad, names)}")
        for key, value in values.items():
            values[key] = check_value(cls, key, value, label=f"{path}: {sec}.{key}")
    return data


def _did_you_mean(unknown: list[str], known) -> str:
    close = [m for u in unknown for m in difflib.get_close_matches(u, list(known), n=1)]
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def build_configs(args: argparse.Namespace, classes: list[type], file_data: dict | None = None) -> dict[type, Any]:
    """Instantiate each dataclass from defaults <- ``file_data`` (config-file sections, e.g. from
    :func:`read_config_file`) <- given flags; every instance checks its values when made."""
    given = vars(args)
    file_data = file_data or {}
    known = {section_name(c) for c in classes}
    unknown = set(file_data) - known - NON_SECTION_KEYS
    if unknown:
        raise SettingsError(f"unknown settings section(s) {sorted(map(str, unknown))}; expected {sorted(known)}")
    out = {}
    for cls in classes:
        sec = section_name(cls)
        values = dict(file_data.get(sec) or {})
        names = {f.name for f in dataclasses.fields(cls)}
        bad = set(values) - names
        if bad:
            raise SettingsError(f"settings section {sec!r} has unknown key(s) {sorted(map(str, bad))}")
        for key, value in given.items():
            if key.startswith(sec + "."):
                values[key.split(".", 1)[1]] = value
        out[cls] = cls(**values)
    return out
