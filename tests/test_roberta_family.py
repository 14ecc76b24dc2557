"""UmBERTo's family: tiny local CamemBERT and XLM-RoBERTa models (tokenizers trained here) through
``emitlab train``, the export and its reload, ONNX and the HTTP service, so that ``--model
Musixmatch/umberto-commoncrawl-cased-v1`` (a CamemBERT) and XLM-R checkpoints work where the Hub is."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from emitlab.cli import main
from emitlab.inference import EmotionClassifier

from conftest import TINY_TRAIN


@pytest.mark.parametrize("model_type", ["camembert", "xlm-roberta"])
def test_train_export_onnx_serve(model_type, emit_folder, tmp_path_factory):
    from tiny import build_tiny_roberta_family

    model = build_tiny_roberta_family(tmp_path_factory.mktemp(model_type), model_type)
    assert json.loads((model / "config.json").read_text())["model_type"] == model_type
    out = tmp_path_factory.mktemp("runs") / "train"
    assert main(["-q", "train", "--data", str(emit_folder), "--model", str(model), "--out", str(out),
                 "--no-report"] + TINY_TRAIN) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["models"]["transformer"]["validation"]["macro_f1"] > 0.3  # it learnt the synthetic cues
    assert m["export"]["reload_max_abs_diff"] == 0.0
    texts = pd.read_csv(emit_folder / "emit_test_nolabel.csv")["text"].tolist()
    ref = np.load(out / "predictions.npz")["transformer_test"]
    torch_clf = EmotionClassifier.from_pretrained(out / "model.zip")
    assert np.array_equal(torch_clf.predict_proba(texts), ref)
    pytest.importorskip("onnxruntime")
    assert main(["-q", "export-onnx", "--model", str(out / "model"), "--no-int8"]) == 0
    onnx_clf = EmotionClassifier.from_pretrained(out / "model", backend="onnx")
    assert np.abs(onnx_clf.predict_proba(texts) - ref).max() < 1e-4
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from emitlab.serving.app import create_app, load_classifier

    with TestClient(create_app(load_classifier(out / "model", backend="onnx"), model_name=model_type)) as client:
        r = client.post("/predict", json={"texts": texts[:3]})
        assert r.status_code == 200, r.text
        body = r.json()
        got = np.array([[row["probabilities"][lab] for lab in m["label_names"]] for row in body["predictions"]])
        assert np.abs(got - ref[:3]).max() < 1e-4
