"""The HTTP service (FastAPI TestClient) and its demo page (the shared headless Chromium of
tests/browser.py), serving the whole ensemble exported from the session's tiny run (conftest's
``tiny_run``: trained once per session; nothing is trained here)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from emitlab.serving.app import BodyLimit, create_app, default_max_body_bytes, load_classifier  # noqa: E402

from test_onnx import has_transformer  # noqa: E402

DEMO_TEXT = "Che bella giornata, sono felice evviva! Ti voglio bene, amore cuore ❤️"
#: true once every bar has its final width and no CSS transition is running
BARS_SETTLED = """() => {
  const bars = [...document.querySelectorAll('.result .bar')];
  return bars.length === 10 && bars.every(b => b.style.width !== '0%' || Number(b.dataset.probability) === 0)
    && document.getAnimations().every(a => a.playState === 'finished');
}"""


@pytest.fixture(scope="module")
def export_dir(tiny_ensemble_export) -> Path:
    """The whole ensemble (every member, the transformer too), read-only."""
    return tiny_ensemble_export


@pytest.fixture(scope="module")
def classifier(export_dir):
    return load_classifier(export_dir)


@pytest.fixture(scope="module")
def client(classifier):
    app = create_app(classifier, max_texts=4, max_chars=50, model_name="tiny")
    with TestClient(app) as c:
        yield c


# ----------------------------------------------------------------------------- API


def test_predict_one_text(client, classifier):
    r = client.post("/predict", json={"text": "felice evviva"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["predictions"]) == 1
    pred = body["predictions"][0]
    assert pred["text"] == "felice evviva"
    assert list(pred["probabilities"]) == classifier.label_names
    assert all(0.0 <= p <= 1.0 for p in pred["probabilities"].values())
    assert set(pred["labels"]) <= set(classifier.label_names)
    assert body["model"]["name"] == "tiny" and body["model"]["n_labels"] == 10 and body["model"]["task"] == "A"
    assert body["model"]["backend"] == "torch" and body["model"]["model_kind"] == classifier.meta["model_kind"]
    # same answer as the Python API
    direct = classifier.predict("felice evviva")[0]
    assert pred["labels"] == direct["labels"]
    assert pred["probabilities"] == pytest.approx(direct["probabilities"], abs=1e-6)


def test_predict_many_texts_keeps_order(client):
    texts = ["che paura terrore", "amore cuore 😂", "x", "rabbia furioso oggi"]
    r = client.post("/predict", json={"texts": texts})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["text"] for p in preds] == texts
    single = client.post("/predict", json={"text": texts[1]}).json()["predictions"][0]
    assert single["probabilities"] == pytest.approx(preds[1]["probabilities"], abs=1e-5)


def test_labels_and_health(client, classifier, export_dir):
    r = client.get("/labels")
    assert r.status_code == 200
    body = r.json()
    meta = json.loads((export_dir / "emitlab.json").read_text())
    assert body["labels"] == meta["labels"] == classifier.label_names
    assert body["thresholds"] == pytest.approx(dict(zip(meta["labels"], meta["decoder"]["thresholds"])), abs=1e-6)
    assert body["decoding"]["at_least_one"] == meta["decoder"]["at_least_one"]
    assert body["decoding"]["neutral_exclusive"] == meta["decoder"]["neutral_exclusive"]
    assert body["decoding"]["rules"] and "threshold" in body["decoding"]["rules"][0]
    assert body["limits"] == {"max_texts": 4, "max_chars": 50, "max_body_bytes": default_max_body_bytes(4, 50)}
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["model"]["n_labels"] == 10
    assert h.json()["model"] == body["model"]


def test_forward_passes_default_to_8_texts_on_cpu_and_32_on_an_accelerator(client, classifier, export_dir):
    """Inside one model call the transformer members sort the texts by length and run passes of
    ``batch_size``: 8 on CPU (less padding), 32 when a member runs on CUDA/MPS; the health page says which,
    and the answers do not depend on it."""
    from types import SimpleNamespace

    import torch

    from emitlab.serving.app import default_batch_size

    assert has_transformer(export_dir) and classifier.transformer_folds
    assert default_batch_size(classifier) == 8
    assert client.get("/health").json()["batching"]["batch_size"] == 8
    on_gpu = SimpleNamespace(transformer_folds=[SimpleNamespace(predictor=SimpleNamespace(
        engine=SimpleNamespace(device=torch.device("cuda", 0))))])
    assert default_batch_size(on_gpu) == 32
    assert default_batch_size(SimpleNamespace(transformer_folds=[])) == 8
    texts = ["che paura terrore", "amore cuore", "x", "rabbia furioso oggi, che giornata lunga e piena di cose"]
    by_size = {}
    for size in (1, 32):
        with TestClient(create_app(classifier, max_texts=4, max_chars=60, batch_size=size)) as c:
            assert c.get("/health").json()["batching"]["batch_size"] == size
            preds = c.post("/predict", json={"texts": texts}).json()["predictions"]
            by_size[size] = [p["probabilities"] for p in preds]
    for a, b in zip(by_size[1], by_size[32]):
        assert a == pytest.approx(b, abs=1e-5)


def test_model_info_names_members_folds_and_combiner(client, classifier, export_dir):
    meta = json.loads((export_dir / "emitlab.json").read_text())
    info = client.get("/health").json()["model"]
    assert info["model_kind"] == meta["model_kind"]
    names = [m["name"] for m in meta["members"]]
    assert [m["name"] for m in info["members"]] == names and {"tfidf", "transformer"} <= set(names)
    members = {m["name"]: m for m in info["members"]}
    assert {n: m["folds"] for n, m in members.items()} == {m["name"]: len(m["folds"]) for m in meta["members"]}
    assert members["tfidf"]["folds"] == 3 and members["transformer"]["folds"] == 2  # conftest's TINY_FOLDS
    assert {n: m["kind"] for n, m in members.items()} == {m["name"]: m["kind"] for m in meta["members"]}
    assert {n: m["backend"] for n, m in members.items()} == {
        m["name"]: "torch" if m["kind"] == "transformer" else "numpy" for m in meta["members"]}
    assert members["transformer"]["max_length"] == info["max_length"] == 48
    assert members["transformer"]["base_model"] == info["base_model"] and info["base_model"]
    assert members["tfidf"]["max_length"] is None and members["tfidf"]["base_model"] is None
    combiner = meta["combiner"]
    from emitlab.engine.ensemble import describe_combiner

    assert info["combiner"] == {"kind": combiner["kind"], "space": combiner.get("space"), "members": names,
                                "description": describe_combiner(combiner, names)}
    assert info["combiner"]["description"]  # the combiner in words: "stacker (C=1)", "average of ..."
    weights = combiner["weights"] if combiner["kind"] == "average" else [None] * len(names)
    assert [m["weight"] for m in info["members"]] == pytest.approx(weights)
    assert info["macro_f1"] == pytest.approx(meta["metrics"], abs=1e-4)
    assert info["nested_macro_f1"] == pytest.approx(meta["nested_macro_f1"], abs=1e-4)


def test_model_info_of_a_single_member_export(tiny_export):
    """The run's own export (its best model: a weighted average of the members it uses)."""
    meta = json.loads((tiny_export / "emitlab.json").read_text())
    app = create_app(load_classifier(tiny_export), model_name="model")
    with TestClient(app) as c:
        info = c.get("/labels").json()["model"]
        r = c.post("/predict", json={"text": "felice evviva"})
    assert r.status_code == 200, r.text
    assert info["model_kind"] == meta["model_kind"] and info["combiner"]["kind"] == meta["combiner"]["kind"]
    assert [(m["name"], m["folds"]) for m in info["members"]] == [(m["name"], len(m["folds"])) for m in meta["members"]]
    if meta["combiner"]["kind"] == "average":
        assert [m["weight"] for m in info["members"]] == pytest.approx(meta["combiner"]["weights"])
    if not has_transformer(tiny_export):
        assert info["max_length"] is None and info["base_model"] is None


def test_serving_on_the_onnx_backend(export_dir, classifier, tmp_path):
    folder = Path(shutil.copytree(export_dir, tmp_path / "model"))  # the ONNX files are written into the copy
    app = create_app(load_classifier(folder, backend="onnx"), model_name="tiny-onnx")
    texts = ["felice evviva", "che paura terrore"]
    with TestClient(app) as c:
        info = c.get("/health").json()["model"]
        r = c.post("/predict", json={"texts": texts})
    assert r.status_code == 200, r.text
    assert info["backend"] == "onnx"
    assert {m["name"]: m["backend"] for m in info["members"]} == {"tfidf": "numpy", "lexicon": "numpy",
                                                                   "transformer": "onnx"}
    got = np.array([[p["probabilities"][k] for k in classifier.label_names] for p in r.json()["predictions"]])
    assert np.abs(got - classifier.predict_proba(texts)).max() <= 1e-4


@pytest.mark.parametrize("payload, status, words", [
    ({"texts": ["a", "b", "c", "d", "e"]}, 413, ["too many texts", "5", "4"]),
    ({"texts": ["ok", "x" * 51]}, 422, ["texts[1]", "51", "50"]),
    ({"text": "y" * 51}, 422, ["text", "51", "50"]),
    ({"texts": []}, 422, ["empty"]),
    ({"text": ""}, 422, ["empty"]),
    ({"texts": ["ok", "   "]}, 422, ["texts[1]", "empty"]),
    ({}, 422, ["text", "texts"]),
    ({"text": "a", "texts": ["b"]}, 422, ["not both"]),
])
def test_limits_give_clear_errors(client, payload, status, words):
    r = client.post("/predict", json=payload)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    for w in words:
        assert w in detail, (w, detail)


def test_malformed_bodies_are_422(client):
    assert client.post("/predict", json={"texts": "not a list"}).status_code == 422
    assert client.post("/predict", json={"texts": [1, 2]}).status_code == 422
    assert client.post("/predict", json={"txt": "typo"}).status_code == 422
    assert client.post("/predict", content=b"{not json",
                       headers={"content-type": "application/json"}).status_code == 422


# ----------------------------------------------------------------------------- body size limit


@pytest.fixture(scope="module")
def small_body_client(classifier):
    app = create_app(classifier, max_texts=4, max_chars=50, model_name="tiny", max_body_bytes=2000)
    with TestClient(app) as c:
        yield c


def test_body_over_content_length_limit_is_413_before_parsing(small_body_client):
    big = json.dumps({"text": "x" * 3000}).encode()
    r = small_body_client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert f"{len(big)} bytes, at most 2000 (max_body_bytes)" in detail
    # not even parsed: a malformed body over the limit is 413, not 422
    r = small_body_client.post("/predict", content=b"{" * 2001, headers={"content-type": "application/json"})
    assert r.status_code == 413
    ok = small_body_client.post("/predict", json={"texts": ["felice evviva", "paura"]})
    assert ok.status_code == 200, ok.text


def test_chunked_body_without_content_length_is_counted(small_body_client):
    def chunks(n):
        yield b'{"text": "'
        for _ in range(n):
            yield b"x" * 100
        yield b'"}'

    r = small_body_client.post("/predict", content=chunks(30), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413 and "more than 2000 bytes" in r.json()["detail"]
    r = small_body_client.post("/predict", content=chunks(0), headers={"content-type": "application/json"})
    assert r.status_code == 422  # within the limit: parsed, and the empty text refused as usual


def test_body_limit_stops_reading_a_stream_at_the_limit():
    import asyncio

    received, sent, called = [], [], []

    async def app(scope, receive, send):
        called.append(True)

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": b"a" * 10, "more_body": True}  # never ends

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    asyncio.run(BodyLimit(app, max_bytes=95)(scope, receive, send))
    assert not called and len(received) == 10  # 100 bytes read: the first count past 95
    assert sent[0]["status"] == 413 and b"more than 95 bytes" in sent[1]["body"]


def test_default_body_limit_admits_the_largest_valid_request(client):
    assert default_max_body_bytes(64, 2000) >= 2**20
    assert len(json.dumps({"texts": ["\U0001F602" * 2000] * 64}).encode()) <= default_max_body_bytes(64, 2000)
    largest = json.dumps({"texts": ["\U0001F602" * 50] * 4}).encode()  # client: 4 texts of 50 characters
    assert len(largest) > 2000
    r = client.post("/predict", content=largest, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert "post" in spec["paths"]["/predict"]
    assert {"/labels", "/health"} <= set(spec["paths"]) and "/" not in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert {"PredictRequest", "PredictResponse", "Prediction", "LabelsResponse", "ModelInfo", "MemberInfo",
            "CombinerInfo"} <= set(schemas)
    assert {"members", "combiner", "model_kind", "backend"} <= set(schemas["ModelInfo"]["properties"])
    assert "1 to 4 texts" in schemas["PredictRequest"]["properties"]["texts"]["description"]
    assert client.get("/docs").status_code == 200


def test_index_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    for needle in ('id="text"', 'id="submit"', "fetch(\"/predict\"", "fetch(\"/labels\"", "<style>", "<script>"):
        assert needle in html
    assert "http://" not in html and "https://" not in html  # no CDN


def test_concurrent_requests(client):
    texts = [["felice evviva"], ["triste lacrime", "paura"], ["amore cuore"]] * 4
    expected = [client.post("/predict", json={"texts": t}).json()["predictions"] for t in texts[:3]]
    results: list = [None] * len(texts)

    def worker(i):
        results[i] = client.post("/predict", json={"texts": texts[i]})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in enumerate(results):
        assert r.status_code == 200
        got = r.json()["predictions"]
        assert [p["labels"] for p in got] == [p["labels"] for p in expected[i % 3]]


def test_serve_cli_registration():
    import argparse

    from emitlab.serving.cli import cmd_serve, register_cli

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--model", "m.zip", "--port", "9001", "--backend", "onnx", "--max-texts", "8"])
    assert (args.model, args.host, args.port, args.backend, args.max_texts, args.max_chars) == \
        ("m.zip", "127.0.0.1", 9001, "onnx", 8, 2000)
    assert args.func is cmd_serve
    assert args.max_body_bytes is None
    assert (args.max_batch_texts, args.max_wait_ms, args.no_batching) == (64, 5.0, False)
    args = parser.parse_args(["serve", "--model", "m", "--max-batch-texts", "16", "--max-wait-ms", "0.5"])
    assert (args.max_batch_texts, args.max_wait_ms) == (16, 0.5)
    assert parser.parse_args(["serve", "--model", "m", "--max-wait-ms", "0"]).max_wait_ms == 0.0
    for bad in (["--max-texts", "0"], ["--max-body-bytes", "0"], ["--max-batch-texts", "0"], ["--max-wait-ms", "-1"],
                ["--max-wait-ms", "nan"], ["--max-wait-ms", "soon"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--model", "m", *bad])


def test_serve_defaults_to_localhost_and_passes_the_body_limit(monkeypatch, capsys):
    import argparse

    import uvicorn

    import emitlab.serving.app as app_module
    from emitlab.serving.cli import register_cli

    class Clf:
        label_names = ["Joy"]
        members = [("tfidf", [object()] * 3), ("transformer", [object()] * 2)]
        meta = {"model_kind": "stacker"}

    calls = {}
    monkeypatch.setattr(app_module, "load_classifier", lambda model, **kw: Clf())
    monkeypatch.setattr(app_module, "create_app", lambda clf, **kw: calls.setdefault("app", kw) and "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.setdefault("run", kw))
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--model", "m", "--max-body-bytes", "4096"])
    assert args.func(args) == 0
    assert calls["run"]["host"] == "127.0.0.1"
    assert calls["app"]["max_body_bytes"] == 4096
    assert (calls["app"]["max_batch_texts"], calls["app"]["max_wait_ms"]) == (64, 5.0)
    out = capsys.readouterr().out
    assert "stacker of tfidf x3, transformer x2" in out and "batches of up to 64 texts, waiting up to 5 ms" in out
    assert calls["app"]["batch_size"] == 8  # the CPU default
    calls.clear()
    args = parser.parse_args(["serve", "--model", "m", "--batch-size", "32"])
    assert args.func(args) == 0 and calls["app"]["batch_size"] == 32
    calls.clear()
    args = parser.parse_args(["serve", "--model", "m", "--max-batch-texts", "8", "--no-batching"])
    assert args.func(args) == 0
    assert (calls["app"]["max_batch_texts"], calls["app"]["max_wait_ms"]) == (1, 0.0)  # --no-batching wins
    assert "no batching" in capsys.readouterr().out


# ----------------------------------------------------------------------------- browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(classifier):
    import uvicorn

    port = _free_port()
    app = create_app(classifier, model_name="tiny")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_live_server_refuses_a_large_chunked_upload(live_server):
    import httpx

    def chunks():
        yield b'{"text": "'
        for _ in range(40):  # 2.5 MiB in 64 KiB chunks, over the default limit of about 1.5 MiB
            yield b"x" * 65536
        yield b'"}'

    r = httpx.post(live_server + "/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and f"more than {default_max_body_bytes(64, 2000)} bytes" in r.json()["detail"]
    assert httpx.post(live_server + "/predict", json={"text": "felice"}).status_code == 200


def test_demo_page_in_headless_chromium(live_server, classifier, browser_page, tmp_path):
    problems: list[str] = []
    page = browser_page(viewport={"width": 1000, "height": 900})
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(live_server + "/", wait_until="networkidle")
    assert "Emozioni" in page.title()
    page.wait_for_function("document.querySelector('#model-info').textContent.includes('labels')")
    page.fill("#text", DEMO_TEXT)
    page.click("#submit")
    page.wait_for_selector(".result .bar[data-label=Joy]")
    page.wait_for_function(BARS_SETTLED)  # the width transitions have ended: the boxes are final

    labels = classifier.label_names
    assert page.locator(".result .bar").count() == 10
    for label in labels:
        box = page.locator(f".result .bar[data-label={label}]").bounding_box()
        assert box is not None and box["width"] > 0, label
        mark = page.locator(f".result .threshold[data-label={label}]")
        assert mark.count() == 1, label
        mbox = mark.bounding_box()
        assert mbox is not None and mbox["height"] > 0, label
    # the predicted labels are highlighted and match the API (the whole ensemble)
    expected = classifier.predict(DEMO_TEXT)[0]
    highlighted = page.eval_on_selector_all(".result .row.predicted", "rows => rows.map(r => r.dataset.label)")
    assert sorted(highlighted) == sorted(expected["labels"])
    assert page.locator(".result .chip").count() == len(expected["labels"])
    assert not page.locator("#error").is_visible()

    # an error from the API is shown on the page, not swallowed
    page.fill("#text", "z" * 2100)
    with page.expect_response("**/predict") as resp:
        page.click("#submit")
    assert resp.value.status == 422
    page.wait_for_selector("#error.show")
    assert "2000" in page.inner_text("#error")
    page.fill("#text", DEMO_TEXT)
    with page.expect_response("**/predict") as resp:
        page.click("#submit")
    assert resp.value.status == 200
    page.wait_for_selector("#submit:enabled")
    assert not page.locator("#error").is_visible()
    page.wait_for_function(BARS_SETTLED)

    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.is_file() and shot.stat().st_size > 5000
    # the 422 of the deliberate too-long text is logged by Chromium as a failed resource load
    problems = [p for p in problems if not ("422" in p and "Failed to load resource" in p)]
    assert not problems, problems


def test_load_classifier_loads_the_whole_export_on_the_backend(monkeypatch):
    from emitlab.inference import EmotionClassifier

    calls = []
    monkeypatch.setattr(EmotionClassifier, "from_pretrained",
                        classmethod(lambda cls, path, **kw: calls.append(kw) or "clf"))
    assert load_classifier("m") == "clf" and load_classifier("m", backend="onnx-int8", device="cpu") == "clf"
    assert calls == [{"device": None, "backend": "torch"}, {"device": "cpu", "backend": "onnx-int8"}]


def test_load_classifier_errors(export_dir, tmp_path):
    from emitlab.errors import ModelFormatError

    with pytest.raises(ValueError, match="unknown backend"):
        load_classifier(export_dir, backend="tensorrt")
    with pytest.raises(ValueError, match="runs on CPU"):
        load_classifier(export_dir, backend="onnx", device="cuda")
    with pytest.raises(ModelFormatError, match="no such file"):
        load_classifier(tmp_path / "nowhere")
