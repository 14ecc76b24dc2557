"""Vocabulary trimming: a copy of a network folder whose tokenizer and word embeddings keep only
the pieces some texts need.

A multilingual encoder carries a vocabulary for a hundred languages: me5-small's 250,002
SentencePiece pieces hold 96M of its 118M weights, and its ``tokenizer.json`` (17 MB) is parsed at
every start. A network that reads Italian needs a fraction of them, so, as for monolingual
copies of multilingual models (Abdaoui et al. 2020, "Load What You Need"; Ushio et al. 2023,
"An Efficiency Study for Language Model Vocabulary Trimming"), :func:`trim_vocabulary` keeps

- every piece the given texts tokenize into (with the network's input prefix),
- every piece of at most one character (so that no character becomes ``<unk>`` that was not),
- the special tokens;

and drops the rest from the tokenizer's model and from the embedding matrix (rows kept in their
order, ids renumbered). Only Unigram tokenizers (SentencePiece: XLM-R, me5) are trimmed: with pieces
removed, the Unigram model splits a word into its best segmentation among the pieces left, so every
text still tokenizes; a text whose pieces were all kept tokenizes to the same pieces (its best
segmentation is still there and still best) and the network gives it the same output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from emitlab.errors import ModelFormatError
from emitlab.io import atomic_write_json, atomic_write_text

#: What of ``network.json`` a trimmed copy keeps (files written for the full vocabulary, such as
#: ONNX graphs, are not copied: ``emitlab export-onnx`` writes them again for the copy).
KEPT_META = ("labels", "input_prefix", "max_length", "pooling", "base_model")


def _remap_processor(node: dict, new_id: dict[int, int]) -> None:
    """Renumber the special-token ids a ``tokenizer.json`` post-processor holds."""
    kind = node.get("type")
    if kind == "Sequence":
        for sub in node.get("processors") or []:
            _remap_processor(sub, new_id)
    elif kind == "TemplateProcessing":
        for special in (node.get("special_tokens") or {}).values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            token, old = node[key]
            node[key] = [token, new_id[old]]
    elif kind not in (None, "ByteLevel"):
        raise ValueError(f"post-processor {kind!r}")


def kept_pieces(tokenizer_json: dict, needed_ids: set[int]) -> list[int]:
    """The ids a trimmed Unigram vocabulary keeps, in their order: ``needed_ids``, every piece of at
    most one character (the Metaspace marker aside), the unknown and the added (special) tokens."""
    model = tokenizer_json["model"]
    vocab = model["vocab"]
    short = {i for i, (piece, _) in enumerate(vocab) if len(piece.replace("\u2581", "")) <= 1}
    specials = {int(t["id"]) for t in tokenizer_json.get("added_tokens") or []}
    keep = (set(needed_ids) | short | specials | {int(model["unk_id"])}) & set(range(len(vocab)))
    return sorted(keep)


def untrimmable(folder: Path) -> str | None:
    """Why the network of ``folder`` cannot be trimmed (None: it can)."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return "no tokenizer.json (a slow tokenizer)"
    with open(path, encoding="utf-8") as f:  # '"type": "Unigram"' is near the end, in "model"
        kind = (json.load(f).get("model") or {}).get("type")
    return None if kind == "Unigram" else f"a {kind} tokenizer (only Unigram ones, as XLM-R's, are trimmed)"


def trim_vocabulary(src: Path, dst: Path, texts: Sequence[str]) -> dict[str, Any]:
    """Write into ``dst`` the network of folder ``src`` with the vocabulary ``texts`` need (see the
    module docstring); returns what was kept (``{"trimmed": False, "why": ...}``, with nothing
    written, for a tokenizer that is not a Unigram one). ``dst`` must not exist."""
    import torch
    from tokenizers import Tokenizer

    from emitlab.members.transformer.member import NETWORK_FILE, read_network_meta
    from emitlab.members.transformer.model import EmotionModel

    src, dst = Path(src), Path(dst)
    why = untrimmable(src)
    if why:
        return {"trimmed": False, "why": why}
    path = src / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    meta = read_network_meta(src)
    prefix = meta.get("input_prefix", "")
    full = Tokenizer.from_file(str(path))
    full.no_truncation()  # every piece of a long text (a word cut in two at the limit would split otherwise)
    needed: set[int] = set()
    texts = [prefix + t for t in texts]
    for start in range(0, len(texts), 4096):
        for enc in full.encode_batch(texts[start:start + 4096]):
            needed.update(enc.ids)
    keep = kept_pieces(data, needed)
    new_id = {old: new for new, old in enumerate(keep)}
    n_full = len(data["model"]["vocab"])
    data["model"]["vocab"] = [data["model"]["vocab"][i] for i in keep]
    data["model"]["unk_id"] = new_id[int(data["model"]["unk_id"])]
    for token in data.get("added_tokens") or []:
        token["id"] = new_id[int(token["id"])]
    if isinstance(data.get("padding"), dict) and "pad_id" in data["padding"]:
        data["padding"]["pad_id"] = new_id[int(data["padding"]["pad_id"])]
    try:
        if data.get("post_processor"):
            _remap_processor(data["post_processor"], new_id)
    except ValueError as exc:
        return {"trimmed": False, "why": f"a tokenizer with an unknown {exc}"}

    model = EmotionModel.load(src, len(meta["labels"]), meta.get("pooling", "mean"))
    old = model.encoder.get_input_embeddings()
    if old.num_embeddings < n_full:
        raise ModelFormatError(f"{src}: {old.num_embeddings} word embeddings for a vocabulary of {n_full}")
    pad = old.padding_idx
    new = torch.nn.Embedding(len(keep), old.embedding_dim, padding_idx=new_id.get(pad) if pad is not None else None)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.as_tensor(keep)])
    model.encoder.set_input_embeddings(new)
    config = model.encoder.config
    config.vocab_size = len(keep)
    for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            setattr(config, attr, new_id[value])

    dst.mkdir(parents=True)
    model.save(dst)
    atomic_write_text(dst / "tokenizer.json", json.dumps(data, ensure_ascii=False))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    info = {"trimmed": True, "pieces": len(keep), "of": n_full, "from_texts": len(needed)}
    atomic_write_json(dst / NETWORK_FILE, {**{k: meta[k] for k in KEPT_META if k in meta}, "vocabulary": info})

    trimmed = Tokenizer.from_file(str(dst / "tokenizer.json"))  # the texts' pieces must come out the same
    trimmed.no_truncation()
    for start in range(0, len(texts), 4096):
        batch = texts[start:start + 4096]
        for a, b in zip(full.encode_batch(batch), trimmed.encode_batch(batch)):
            if [new_id[i] for i in a.ids] != b.ids:
                raise RuntimeError(f"trimming changed the tokens of a text it kept the pieces of: {b.tokens[:12]}")
    return info


def changed_texts(full: Path, trimmed: Path, texts: Sequence[str]) -> int:
    """How many ``texts`` the trimmed tokenizer splits into other pieces than the full one (texts
    with a piece that was dropped)."""
    from tokenizers import Tokenizer

    from emitlab.members.transformer.member import read_network_meta

    prefix = read_network_meta(full).get("input_prefix", "")
    a = Tokenizer.from_file(str(Path(full) / "tokenizer.json"))
    b = Tokenizer.from_file(str(Path(trimmed) / "tokenizer.json"))
    a.no_truncation()
    b.no_truncation()
    texts = [prefix + t for t in texts]
    return sum(x.tokens != y.tokens for x, y in zip(a.encode_batch(texts), b.encode_batch(texts)))
