"""The three extension points: members, combiners and inference backends, one registry each.

Like transformers' ``Auto*`` mappings, a built-in entry is a ``"module:attribute"`` string,
imported at its first :meth:`Registry.get`: the settings, the CLI's choices and its parser read
the names without importing torch or scikit-learn, and this module (at the bottom of the layers,
beside ``settings``) imports nothing of the package. Everything that needs "which members,
combiners, backends are there, and what is each" reads these registries: the settings' choices,
the ``--members``/``--combiners``/``--backend`` flags, loading a member or a combiner from an
export, the report, ``compare`` and serving.

Adding one is its own file plus one line: a built-in in the mapping below, or from outside the
package (a plug-in, a notebook, a test)::

    from emitlab.registry import MEMBERS
    MEMBERS.register("toy", ToyMember)        # or "mypackage.toy:ToyMember"
    emitlab.cli.main(["run", "--members", "tfidf,toy", ...])

What an entry must provide:

- a **member** (:class:`emitlab.members.Member`): ``kind``, ``fit``, ``predict_proba``, ``save`` and
  the classmethods ``load(folder, spec, **kwargs)`` and ``for_fold(context, fold)`` (the member of
  one fold of a run, with that run's settings); ``network = True`` for one that fine-tunes a
  network (its own K, ``--transformer-folds``; the device and disk checks; every rank of a
  multi-process launch trains it).
- a **combiner** (:mod:`emitlab.engine.ensemble`): ``kind``, ``fit``, ``fit_predict``, ``combine``,
  ``to_dict``, and the classmethods ``from_dict(d)`` and ``candidates(n_members, config, seed)`` (the
  candidates it adds to the nested choice), and the static methods ``members_used(d, members)``
  (which members an exported combiner ``d`` needs), ``restrict(d, members, used)`` and
  ``describe(d, members)`` (words for the report and ``compare``).
- a **backend** (:mod:`emitlab.members.transformer.backends`): ``name``, ``file`` (the file it runs,
  in a network folder; ``None`` for the torch weights), ``cpu_only``, ``onnx_export`` (whether
  ``emitlab export-onnx`` writes its file) and ``load(folder, meta, device)`` returning a callable
  from a batch of int64 arrays to logits.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator


class Registry:
    """Names -> classes (or ``"module:attribute"`` strings, resolved at first use).

    ``choices`` is a live list of the names, in registration order: settings and argparse hold it,
    so a name registered later is a valid choice at once."""

    def __init__(self, kind: str, entries: dict[str, Any]):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self.choices: list[str] = []
        for name, target in entries.items():
            self.register(name, target)
        self.builtin: tuple[str, ...] = tuple(entries)

    def register(self, name: str, target: Any = None, *, replace: bool = False) -> Any:
        """Register ``target`` (a class, or ``"module:attribute"``) under ``name``; without
        ``target``, a class decorator. A taken name needs ``replace=True``."""
        if target is None:
            return lambda cls: self.register(name, cls, replace=replace)
        if not isinstance(name, str) or not name or "," in name or name != name.strip():
            raise ValueError(f"a {self.kind} name must be a non-empty string without commas: {name!r}")
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is registered already (replace=True to replace it)")
        self._entries[name] = target
        if name not in self.choices:
            self.choices.append(name)
        return target

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's toy); built-ins stay."""
        if name in self.builtin:
            raise ValueError(f"{self.kind} {name!r} is built in")
        self._entries.pop(name, None)
        if name in self.choices:
            self.choices.remove(name)

    def get(self, name: str) -> Any:
        """The class registered under ``name`` (imported on first use); ``KeyError`` naming the
        known ones for an unknown name."""
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r} (known: {', '.join(self.choices)})")
        target = self._entries[name]
        if isinstance(target, str):
            module, _, attribute = target.partition(":")
            target = getattr(importlib.import_module(module), attribute)
            self._entries[name] = target
        return target

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(name, class)`` for every entry (imports them all)."""
        return ((name, self.get(name)) for name in list(self.choices))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.choices))

    def __len__(self) -> int:
        return len(self.choices)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.choices!r})"


def _lazy(module: str) -> Callable[[str], str]:
    return lambda attribute: f"{module}:{attribute}"


_ensemble = _lazy("emitlab.engine.ensemble")
_backends = _lazy("emitlab.members.transformer.backends")

#: Members of the ensemble (``--members``), in the default order.
MEMBERS = Registry("member", {
    "tfidf": "emitlab.members.tfidf:TfidfMember",
    "lexicon": "emitlab.members.lexicon:LexiconMember",
    "transformer": "emitlab.members.transformer.member:TransformerMember",
})

#: Combiners tried besides each member alone (``--combiners``).
COMBINERS = Registry("combiner", {
    "average": _ensemble("WeightedAverage"),
    "stacker": _ensemble("Stacker"),
})

#: Runtimes of a transformer member's network (``--backend``).
BACKENDS = Registry("backend", {
    "torch": _backends("TorchBackend"),
    "onnx": _backends("OnnxBackend"),
    "onnx-int8": _backends("OnnxInt8Backend"),
})

__all__ = ["Registry", "MEMBERS", "COMBINERS", "BACKENDS"]
