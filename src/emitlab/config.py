"""Settings as dataclasses: command-line options, config files and saved run configs.

Each field's ``metadata["help"]`` becomes its ``--help`` text (as in HF's
``HfArgumentParser``); ``metadata["choices"]`` restricts values and ``metadata["flag"]`` renames the option. A config file (JSON or YAML)
holds one section per dataclass, named as in :func:`section_name`, and replaces the defaults;
flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def section_name(cls: type) -> str:
    """``TrainConfig`` -> ``train``; the key of that dataclass in config files."""
    name = cls.__name__
    return (name[: -len("Config")] if name.endswith("Config") else name).lower()


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip ``Optional[...]``; return (type, is_list)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(tp)[0], True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """Add one ``--kebab-case`` option per field of ``cls`` to ``parser`` (defaults suppressed
    so that :func:`build_configs` can tell given flags from defaults)."""
    group = parser.add_argument_group(title or f"{section_name(cls)} settings")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False:
            continue
        tp, is_list = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_text = f.metadata.get("help", "")
        help_text += f" (default: {default})" if default not in (None, "", []) else ""
        kwargs: dict[str, Any] = {"dest": f"{section_name(cls)}.{f.name}", "help": help_text, "default": argparse.SUPPRESS}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp
            kwargs["metavar"] = f.metadata.get("metavar", f.name.upper())
            if is_list:
                kwargs["nargs"] = "+"
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
                kwargs.pop("metavar")
        group.add_argument(f.metadata.get("flag", "--" + f.name.replace("_", "-")), **kwargs)


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections (e.g. 'train:', 'data:')")
    return data


def build_configs(args: argparse.Namespace, classes: list[type], file_data: dict | None = None) -> dict[type, Any]:
    """Instantiate each dataclass from defaults <- config file section <- given flags."""
    given = vars(args)
    file_data = file_data or {}
    known = {section_name(c) for c in classes}
    unknown = set(file_data) - known - {"command", "versions", "git"}  # a run's config.json is a valid --config
    if unknown:
        raise ValueError(f"config file has unknown section(s) {sorted(unknown)}; expected {sorted(known)}")
    out = {}
    for cls in classes:
        sec = section_name(cls)
        values = dict(file_data.get(sec) or {})
        names = {f.name for f in dataclasses.fields(cls)}
        bad = set(values) - names
        if bad:
            raise ValueError(f"config section {sec!r} has unknown key(s) {sorted(bad)}")
        for key, value in given.items():
            if key.startswith(sec + "."):
                values[key.split(".", 1)[1]] = value
        out[cls] = cls(**values)
    return out


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
