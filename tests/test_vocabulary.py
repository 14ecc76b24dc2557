"""Vocabulary trimming of a network folder (the student's ``--trim-vocabulary``), on a tiny local
XLM-RoBERTa whose SentencePiece-style Unigram tokenizer is trained here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emitlab.labels import TASK_A_LABELS
from emitlab.members.transformer.member import NETWORK_FILE, TransformerMember, load_predictor
from emitlab.members.transformer.vocabulary import changed_texts, trim_vocabulary, untrimmable

from synthetic import make_rows


def _network_folder(model_dir, folder):
    """A member's network folder (as ``TransformerMember.save`` writes it) around an untrained encoder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from emitlab.members.transformer.model import EmotionModel

    torch.manual_seed(0)
    EmotionModel(AutoModel.from_pretrained(model_dir), len(TASK_A_LABELS), "mean", dropout=0.0).save(folder)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
    (folder / NETWORK_FILE).write_text(json.dumps({"labels": list(TASK_A_LABELS), "input_prefix": "query: ",
                                                   "max_length": 48, "pooling": "mean", "base_model": "tiny"}))
    return folder


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    from tiny import build_tiny_roberta_family

    model = build_tiny_roberta_family(tmp_path_factory.mktemp("xlmr"), "xlm-roberta")
    full = _network_folder(model, tmp_path_factory.mktemp("full"))
    _, texts, _, _ = make_rows(200, 3, "v")
    kept_for, others = texts[:4], texts[100:]  # four texts: a small part of the tiny vocabulary
    trimmed = tmp_path_factory.mktemp("trim") / "net"
    info = trim_vocabulary(full, trimmed, kept_for)
    return full, trimmed, info, kept_for, others


def _proba(folder, texts):
    predictor, _ = load_predictor(folder)
    return predictor.predict_proba(texts)


def test_the_trimmed_network_is_smaller_and_gives_the_same_outputs_for_its_texts(networks):
    full, trimmed, info, kept_for, _ = networks
    vocab_full = json.loads((full / "tokenizer.json").read_text())["model"]["vocab"]
    assert info["trimmed"] and info["of"] == len(vocab_full) and info["pieces"] < info["of"]
    assert json.loads((trimmed / "config.json").read_text())["vocab_size"] == info["pieces"]
    assert (trimmed / "model.safetensors").stat().st_size < (full / "model.safetensors").stat().st_size
    assert json.loads((trimmed / NETWORK_FILE).read_text())["vocabulary"] == info
    a, b = _proba(full, kept_for), _proba(trimmed, kept_for)
    assert np.abs(a - b).max() < 1e-6
    assert changed_texts(full, trimmed, kept_for) == 0


def test_a_text_with_a_dropped_piece_is_split_into_kept_pieces(networks):
    from transformers import AutoTokenizer

    full, trimmed, _, _, others = networks
    changed = [t for t in others if changed_texts(full, trimmed, [t])]
    assert changed, "texts beyond the kept ones should use pieces that were dropped"
    assert changed_texts(full, trimmed, others) == len(changed) < len(others)
    tok = AutoTokenizer.from_pretrained(trimmed)
    for text in changed[:5]:
        pieces = tok.convert_ids_to_tokens(tok("query: " + text)["input_ids"])
        assert pieces[0] == "<s>" and pieces[-1] == "</s>" and "<unk>" not in pieces
    assert np.isfinite(_proba(trimmed, changed)).all()


def test_the_trimmed_folder_loads_as_a_member(networks):
    _, trimmed, _, kept_for, _ = networks
    spec = {"kind": "transformer", "config": {}, "label_names": list(TASK_A_LABELS),
            "files": sorted(p.name for p in trimmed.iterdir() if p.is_file())}
    member = TransformerMember.load(trimmed, spec)
    assert member.predict_proba(kept_for[:4]).shape == (4, len(TASK_A_LABELS))


def test_only_unigram_tokenizers_are_trimmed(tiny_model, tmp_path):
    full = _network_folder(tiny_model, tmp_path / "bert")
    assert "WordPiece" in untrimmable(full)
    info = trim_vocabulary(full, tmp_path / "out", ["ciao"])
    assert info == {"trimmed": False, "why": untrimmable(full)} and not (tmp_path / "out").exists()
