"""Dynamic micro-batching of ``emitlab serve`` (serving/batching.py), its graceful shutdown and
its Prometheus metrics (serving/metrics.py).

Most tests use a fake classifier: deterministic probabilities per text, a record of every model
call, and a gate that holds model calls so that requests queue up behind one that is running --
the only way to know which requests share a batch without timing assumptions. One test runs the
tiny whole-ensemble export (conftest's ``tiny_ensemble_export``) under 50 concurrent clients.
No test sleeps for a fixed time (the fake's optional ``delay`` simulates model work); every
wait is for a condition, with a deadline of DEADLINE seconds that only stops a hang.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from emitlab.engine.calibration import Decoder  # noqa: E402
from emitlab.inference import rows_from_probs  # noqa: E402
from emitlab.labels import TASK_A_LABELS  # noqa: E402
from emitlab.serving.app import create_app, load_classifier  # noqa: E402
from emitlab.serving.batching import BatchError, MicroBatcher, ShuttingDown  # noqa: E402

DEADLINE = 60.0  # seconds; never reached unless something hangs


def wait_for(condition, what: str, timeout: float = DEADLINE) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


class Gate:
    """Holds every call while closed; ``entered`` counts the calls that reached it."""

    def __init__(self, open_: bool = True):
        self._event = threading.Event()
        if open_:
            self._event.set()
        self.entered = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self._event.clear()

    def open(self) -> None:
        self._event.set()

    def pass_(self) -> None:
        with self._lock:
            self.entered += 1
        assert self._event.wait(DEADLINE), "gate never opened"


class Recorder:
    """A ``run_batch`` for the batcher alone: rows are ``"row:<text>"``; records every call."""

    def __init__(self, fail_on: str | None = None, rows_off_by: int = 0):
        self.calls: list[list[str]] = []
        self.gate = Gate()
        self.fail_on = fail_on
        self.rows_off_by = rows_off_by

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        self.gate.pass_()
        if self.fail_on and any(self.fail_on in t for t in texts):
            raise RuntimeError(f"the model choked on {self.fail_on!r}")
        return [f"row:{t}" for t in texts][: len(texts) + self.rows_off_by] + ["extra"] * max(0, self.rows_off_by)


class FakeClassifier:
    """What create_app needs of an EmotionClassifier, with deterministic per-text probabilities
    (from a hash of the text alone, so a row never depends on its batch companions)."""

    label_names = list(TASK_A_LABELS)

    def __init__(self, delay: float = 0.0, fail_on: str | None = None):
        self.decoder = Decoder(self.label_names, [0.5] * len(self.label_names))
        self.meta = {"model_kind": "fake", "task": "A"}
        self.members: list = []
        self.delay = delay
        self.fail_on = fail_on
        self.gate = Gate()
        self.calls: list[list[str]] = []
        self.active = self.max_active = 0
        self._lock = threading.Lock()

    @staticmethod
    def probs(texts) -> np.ndarray:
        return np.array([[b / 255 for b in hashlib.sha256(t.encode()).digest()[:10]] for t in texts])

    def expected(self, texts) -> list[dict[str, Any]]:
        probs = self.probs(texts)
        return [{"text": t, **r} for t, r in zip(texts, rows_from_probs(probs, self.decode(probs), self.label_names))]

    def predict_proba(self, texts, batch_size=None) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.gate.pass_()
            if self.delay:
                time.sleep(self.delay)  # simulated model work, so that a queue builds up
            if self.fail_on and any(self.fail_on in t for t in texts):
                raise RuntimeError(f"the model choked on {self.fail_on!r}")
            return self.probs(texts)
        finally:
            with self._lock:
                self.active -= 1

    def decode(self, probs: np.ndarray) -> np.ndarray:
        return self.decoder.decode(probs)


def in_thread(fn, *args) -> dict:
    """Run ``fn(*args)`` in a thread; the returned dict gets ``result`` (or ``error``) and ``thread``."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            box["error"] = exc

    box["thread"] = threading.Thread(target=run, daemon=True)
    box["thread"].start()
    return box


def finished(box: dict):
    box["thread"].join(DEADLINE)
    assert not box["thread"].is_alive(), "still running"
    if "error" in box:
        raise box["error"]
    return box["result"]


def request_texts(n_requests: int, tag: str = "client") -> list[list[str]]:
    """Different texts and 1 to 5 texts per request."""
    return [[f"{tag} {i} testo {j}" for j in range(1 + (i * 7) % 5)] for i in range(n_requests)]


def post_all(client, requests: list[list[str]]) -> list:
    """One thread per request, all released together."""
    barrier = threading.Barrier(len(requests))
    responses: list = [None] * len(requests)

    def worker(i):
        barrier.wait(DEADLINE)
        body = {"text": requests[i][0]} if len(requests[i]) == 1 and i % 2 else {"texts": requests[i]}
        responses[i] = client.post("/predict", json=body)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert not any(t.is_alive() for t in threads)
    return responses


# ----------------------------------------------------------------------------- the batcher alone


def test_queued_requests_share_one_model_call_and_get_their_own_rows():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_texts=64, max_wait_ms=0)
    run.gate.close()
    first = batcher.submit(["a"])
    wait_for(lambda: run.gate.entered == 1, "the first call")
    requests = request_texts(10)
    futures = [batcher.submit(t) for t in requests]
    assert batcher.queue_depth == 10
    run.gate.open()
    assert first.result(DEADLINE) == ["row:a"]
    for texts, fut in zip(requests, futures):
        assert fut.result(DEADLINE) == [f"row:{t}" for t in texts]
    assert run.calls == [["a"], [t for texts in requests for t in texts]]  # one call, in arrival order
    assert batcher.close(DEADLINE) and not batcher.running


def test_batches_are_whole_requests_in_order_and_a_large_one_runs_alone():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_texts=5, max_wait_ms=0)
    run.gate.close()
    hold = batcher.submit(["hold"])
    wait_for(lambda: run.gate.entered == 1, "the first call")
    sizes = [2, 2, 2, 1, 6, 1, 3]
    requests = [[f"r{i}t{j}" for j in range(n)] for i, n in enumerate(sizes)]
    futures = [batcher.submit(t) for t in requests]
    run.gate.open()
    hold.result(DEADLINE)
    for texts, fut in zip(requests, futures):
        assert fut.result(DEADLINE) == [f"row:{t}" for t in texts]
    # 2+2 (a third 2 would pass 5), 2+1 (the 6 would pass 5), the 6 alone and unsplit, 1+3
    assert [len(c) for c in run.calls[1:]] == [4, 3, 6, 4]
    assert [t for c in run.calls[1:] for t in c] == [t for texts in requests for t in texts]
    batcher.close(DEADLINE)


def test_max_batch_texts_one_serialises_every_request():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_texts=1, max_wait_ms=0)
    run.gate.close()
    hold = batcher.submit(["hold"])
    wait_for(lambda: run.gate.entered == 1, "the first call")
    requests = [["a"], ["b", "c", "d"], ["e", "f"], ["g"]]
    futures = [batcher.submit(t) for t in requests]
    run.gate.open()
    hold.result(DEADLINE)
    assert [f.result(DEADLINE) for f in futures] == [[f"row:{t}" for t in texts] for texts in requests]
    assert run.calls[1:] == requests  # one model call per request
    batcher.close(DEADLINE)


def test_without_load_a_lone_request_runs_at_once():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_texts=64, max_wait_ms=600_000)  # ten minutes
    # one client, one request at a time: no batch ever took two requests, so nothing waits
    # (were it to wait for companions, these would hang until DEADLINE)
    assert batcher.predict(["alone"], timeout=DEADLINE) == ["row:alone"]
    assert batcher.predict(["again"], timeout=DEADLINE) == ["row:again"]
    assert run.calls == [["alone"], ["again"]]
    batcher.close(DEADLINE)


def make_load(batcher: MicroBatcher, run: Recorder) -> None:
    """Two requests queue behind a held one and run as one batch: the batcher is now under load."""
    run.gate.close()
    hold = batcher.submit(["hold"])
    wait_for(lambda: run.gate.entered == 1, "the first call")
    queued = [batcher.submit(["q1"]), batcher.submit(["q2"])]
    run.gate.open()
    assert [f.result(DEADLINE) for f in [hold, *queued]] == [["row:hold"], ["row:q1"], ["row:q2"]]
    assert run.calls[-1] == ["q1", "q2"]


def test_under_load_a_request_waits_for_companions_at_most_max_wait():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_texts=64, max_wait_ms=1000)
    make_load(batcher, run)
    x, y = batcher.submit(["x"]), batcher.submit(["y"])  # the second arrives within the first one's wait
    assert x.result(DEADLINE) == ["row:x"] and y.result(DEADLINE) == ["row:y"]
    assert run.calls[-1] == ["x", "y"]
    # alone, it runs once max_wait has passed without companions (no timing asserted: behaviour
    # only); the load is then over, and the next lone request does not wait at all
    assert batcher.predict(["alone"], timeout=DEADLINE) == ["row:alone"]
    assert run.calls[-1] == ["alone"]
    batcher.max_wait_ms = 600_000  # would hang were it to wait
    assert batcher.predict(["after"], timeout=DEADLINE) == ["row:after"]
    batcher.close(DEADLINE)


def test_a_full_batch_runs_without_waiting_for_max_wait():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_texts=4, max_wait_ms=600_000)  # ten minutes
    run.gate.close()
    hold = batcher.submit(["h"])  # no load yet: runs at once
    wait_for(lambda: run.gate.entered == 1, "the first call")
    futures = [batcher.submit(["a", "b"]), batcher.submit(["c", "d"])]
    run.gate.open()
    assert hold.result(DEADLINE) == ["row:h"]
    assert [f.result(DEADLINE) for f in futures] == [["row:a", "row:b"], ["row:c", "row:d"]]
    assert run.calls[1:] == [["a", "b", "c", "d"]]
    # under load now, yet closing does not wait out max_wait either: a queued request runs at once
    pending = batcher.submit(["e"])
    assert batcher.close(DEADLINE)
    assert pending.result(0) == ["row:e"]


def test_a_failing_batch_fails_only_its_own_requests():
    run = Recorder(fail_on="boom")
    batcher = MicroBatcher(run, max_batch_texts=3, max_wait_ms=0)
    run.gate.close()
    hold = batcher.submit(["hold"])
    wait_for(lambda: run.gate.entered == 1, "the first call")
    same_batch = [batcher.submit(["ok 1"]), batcher.submit(["boom", "ok 2"])]
    next_batch = batcher.submit(["ok 3"])
    run.gate.open()
    assert hold.result(DEADLINE) == ["row:hold"]
    for fut in same_batch:
        with pytest.raises(BatchError, match="prediction failed for the batch of 3 texts .*RuntimeError: the model "
                                             "choked on 'boom'") as info:
            fut.result(DEADLINE)
        assert isinstance(info.value.__cause__, RuntimeError)
    assert next_batch.result(DEADLINE) == ["row:ok 3"]
    assert batcher.predict(["later"], timeout=DEADLINE) == ["row:later"]  # still serving
    batcher.close(DEADLINE)


@pytest.mark.parametrize("off_by", [-1, 1])
def test_a_wrong_number_of_rows_is_a_batch_error(off_by):
    batcher = MicroBatcher(Recorder(rows_off_by=off_by), max_wait_ms=0)
    with pytest.raises(BatchError, match="rows for 2 texts"):
        batcher.predict(["a", "b"], timeout=DEADLINE)
    batcher.close(DEADLINE)


def test_close_finishes_the_running_batch_and_the_queue_then_refuses():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_texts=1, max_wait_ms=0)
    run.gate.close()
    running = batcher.submit(["running"])
    wait_for(lambda: run.gate.entered == 1, "the first call")
    queued = batcher.submit(["queued"])
    closer = in_thread(batcher.close, DEADLINE)
    wait_for(lambda: batcher.closing, "close to begin")
    with pytest.raises(ShuttingDown):
        batcher.submit(["too late"])
    assert not running.done() and not queued.done() and closer["thread"].is_alive()
    run.gate.open()
    assert finished(closer) is True
    assert running.result(0) == ["row:running"] and queued.result(0) == ["row:queued"]
    assert not batcher.running
    batcher.start()  # a new lifespan opens it again
    assert batcher.predict(["again"], timeout=DEADLINE) == ["row:again"]
    batcher.close(DEADLINE)


def test_close_timeout_answers_the_queue_with_shutting_down():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_texts=1, max_wait_ms=0)
    run.gate.close()
    running = batcher.submit(["running"])
    wait_for(lambda: run.gate.entered == 1, "the first call")
    queued = batcher.submit(["queued"])
    assert batcher.close(timeout=0.05) is False  # the model call is stuck
    with pytest.raises(ShuttingDown):
        queued.result(0)
    run.gate.open()
    assert running.result(DEADLINE) == ["row:running"]  # answered when its call returns
    wait_for(lambda: not batcher.running, "the worker to end")
    assert run.calls == [["running"]]


def test_a_cancelled_request_costs_no_model_time():
    run = Recorder()
    batcher = MicroBatcher(run, max_wait_ms=0)
    run.gate.close()
    hold = batcher.submit(["hold"])
    wait_for(lambda: run.gate.entered == 1, "the first call")
    gone, kept = batcher.submit(["gone"]), batcher.submit(["kept"])
    assert gone.cancel()
    run.gate.open()
    assert hold.result(DEADLINE) == ["row:hold"] and kept.result(DEADLINE) == ["row:kept"]
    assert run.calls == [["hold"], ["kept"]]
    batcher.close(DEADLINE)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch_texts=0)
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_wait_ms=-1)
    with pytest.raises(ValueError):
        MicroBatcher(Recorder()).submit([])


# ----------------------------------------------------------------------------- the app, fake model


def test_concurrent_clients_each_get_their_own_rows_from_shared_batches():
    fake = FakeClassifier(delay=0.02)
    app = create_app(fake, max_texts=8, max_chars=100, model_name="fake", max_batch_texts=16, max_wait_ms=5)
    requests = request_texts(50)
    with TestClient(app) as client:
        responses = post_all(client, requests)
        health = client.get("/health").json()
    for texts, r in zip(requests, responses):
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == fake.expected(texts)  # exactly its own rows, in order
    assert sorted(t for call in fake.calls for t in call) == sorted(t for texts in requests for t in texts)
    assert fake.max_active == 1  # one model call at a time
    assert all(len(call) <= 16 for call in fake.calls)
    owners = [{t.split(" testo ")[0] for t in call} for call in fake.calls]
    assert max(len(o) for o in owners) > 1, fake.calls  # batches of several requests happened
    assert len(fake.calls) < len(requests)
    assert health["batching"] == {"max_batch_texts": 16, "max_wait_ms": 5.0, "batch_size": 8, "queue_depth": 0,
                                  "batches_run": len(fake.calls)}
    assert health["requests_served"] == 50


def test_no_batching_runs_each_request_alone():
    fake = FakeClassifier(delay=0.005)
    app = create_app(fake, max_texts=8, max_chars=100, max_batch_texts=1, max_wait_ms=0)
    requests = request_texts(20, tag="solo")
    with TestClient(app) as client:
        responses = post_all(client, requests)
    for texts, r in zip(requests, responses):
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == fake.expected(texts)
    assert sorted(fake.calls) == sorted(requests) and fake.max_active == 1


def test_a_failing_batch_gives_its_requests_a_500_and_the_server_goes_on():
    fake = FakeClassifier(fail_on="boom")
    app = create_app(fake, max_texts=8, max_chars=100, max_batch_texts=64, max_wait_ms=0)
    with TestClient(app) as client:
        fake.gate.close()
        hold = in_thread(lambda: client.post("/predict", json={"text": "hold"}))
        wait_for(lambda: fake.gate.entered == 1, "the first model call")
        ok_box = in_thread(lambda: client.post("/predict", json={"texts": ["fine"]}))
        bad_box = in_thread(lambda: client.post("/predict", json={"texts": ["boom", "fine too"]}))
        wait_for(lambda: app.state.batcher.queue_depth == 2, "two queued requests")
        fake.gate.open()
        assert finished(hold).status_code == 200
        for box in (ok_box, bad_box):  # same batch: both fail, with a JSON error
            r = finished(box)
            assert r.status_code == 500 and r.headers["content-type"] == "application/json"
            assert "prediction failed" in r.json()["detail"] and "boom" in r.json()["detail"]
        after = client.post("/predict", json={"texts": ["fine", "again"]})
        assert after.status_code == 200 and after.json()["predictions"] == fake.expected(["fine", "again"])
        assert client.get("/health").json()["status"] == "ok"
        metrics = scrape(client)
    assert metrics.value("emitlab_batch_errors_total") == 1
    assert metrics.value("emitlab_requests_total", endpoint="/predict", status="500") == 2
    assert metrics.value("emitlab_request_errors_total", endpoint="/predict", kind="server") == 2


def test_shutdown_finishes_the_in_flight_batch_and_refuses_new_requests():
    fake = FakeClassifier()
    app = create_app(fake, max_texts=8, max_chars=100, max_batch_texts=1, max_wait_ms=0)
    # ``lifespan`` runs the app's startup and, at __exit__, its shutdown; the requests go through
    # a client without a lifespan of its own (an event loop per request), so that -- as with
    # uvicorn, which stops only after its open requests -- they outlive the lifespan's loop
    lifespan, client = TestClient(app), TestClient(app)
    lifespan.__enter__()
    closer = None
    try:
        fake.gate.close()
        in_flight = in_thread(lambda: client.post("/predict", json={"text": "in flight"}))
        wait_for(lambda: fake.gate.entered == 1, "the first model call")
        queued = in_thread(lambda: client.post("/predict", json={"texts": ["queued", "too"]}))
        wait_for(lambda: app.state.batcher.queue_depth == 1, "a queued request")
        closer = in_thread(lifespan.__exit__, None, None, None)  # the lifespan's shutdown
        wait_for(lambda: app.state.batcher.closing, "shutdown to begin")
        late = client.post("/predict", json={"text": "late"})
        assert late.status_code == 503 and "shutting down" in late.json()["detail"]
        assert late.headers["retry-after"] == "1"
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "shutting down"
        assert in_flight["thread"].is_alive() and closer["thread"].is_alive()  # held by the running batch
        assert queued["thread"].is_alive()
        fake.gate.open()
        r = finished(in_flight)
        assert r.status_code == 200 and r.json()["predictions"] == fake.expected(["in flight"])
        r = finished(queued)  # accepted before shutdown: answered too
        assert r.status_code == 200 and r.json()["predictions"] == fake.expected(["queued", "too"])
        finished(closer)
    finally:
        fake.gate.open()
        if closer is None:
            lifespan.__exit__(None, None, None)
    assert not app.state.batcher.running
    assert fake.calls == [["in flight"], ["queued", "too"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uvicorn_shutdown_waits_for_the_in_flight_batch():
    import uvicorn

    fake = FakeClassifier()
    app = create_app(fake, max_texts=8, max_chars=100, max_wait_ms=0)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        assert server.started
        fake.gate.close()
        in_flight = in_thread(lambda: httpx.post(base + "/predict", json={"texts": ["uno", "due"]}, timeout=DEADLINE))
        wait_for(lambda: fake.gate.entered == 1, "the model call")
        server.should_exit = True

        def refused() -> bool:
            try:
                httpx.get(base + "/health", timeout=5)
            except httpx.TransportError:
                return True
            return False

        wait_for(refused, "uvicorn to stop accepting connections")
        assert thread.is_alive() and in_flight["thread"].is_alive()  # still waiting for the batch
        fake.gate.open()
        r = finished(in_flight)
        assert r.status_code == 200 and r.json()["predictions"] == fake.expected(["uno", "due"])
        thread.join(DEADLINE)
        assert not thread.is_alive()
        assert not app.state.batcher.running and app.state.batcher.closing
    finally:
        fake.gate.open()
        server.should_exit = True
        thread.join(DEADLINE)


# ----------------------------------------------------------------------------- /metrics


class Scrape:
    def __init__(self, text: str):
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels) -> float:
        """The sample's value; 0 when it is not there (a labelled series not yet used)."""
        for s in self.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        return 0.0

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.samples)


def scrape(client) -> Scrape:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return Scrape(r.text)


def test_metrics_expose_counters_and_histograms_that_move():
    fake = FakeClassifier()
    app = create_app(fake, max_texts=4, max_chars=100, max_body_bytes=2000, max_wait_ms=0)
    other = create_app(FakeClassifier(), max_texts=4, max_chars=100)  # its own registry: no clash, no sharing
    with TestClient(app) as client, TestClient(other) as other_client:
        before = scrape(client)
        for name in ("emitlab_batch_texts_bucket", "emitlab_batch_requests_count", "emitlab_queue_depth",
                     "emitlab_batch_duration_seconds_count", "emitlab_batch_errors_total"):
            assert before.has(name), name
        assert before.value("emitlab_batch_texts_count") == 0
        assert client.post("/predict", json={"text": "uno"}).status_code == 200
        assert client.post("/predict", json={"texts": ["due", "tre"]}).status_code == 200
        assert client.post("/predict", json={"text": "  "}).status_code == 422
        big = client.post("/predict", content=b"x" * 3000, headers={"content-type": "application/json"})
        assert big.status_code == 413
        assert client.get("/nowhere").status_code == 404
        assert client.get("/health").status_code == 200
        after = scrape(client)
        untouched = scrape(other_client)
    assert after.value("emitlab_requests_total", endpoint="/predict", status="200") == 2
    assert after.value("emitlab_requests_total", endpoint="/predict", status="422") == 1
    assert after.value("emitlab_requests_total", endpoint="/predict", status="413") == 1  # the body limit's too
    assert after.value("emitlab_requests_total", endpoint="other", status="404") == 1
    assert after.value("emitlab_requests_total", endpoint="/health", status="200") == 1
    assert after.value("emitlab_requests_total", endpoint="/metrics", status="200") == 1  # the first scrape
    assert after.value("emitlab_request_errors_total", endpoint="/predict", kind="client") == 2
    assert after.value("emitlab_request_duration_seconds_count", endpoint="/predict") == 4
    assert after.value("emitlab_request_duration_seconds_bucket", endpoint="/predict", le="+Inf") == 4
    assert after.value("emitlab_request_duration_seconds_sum", endpoint="/predict") > 0
    assert after.value("emitlab_batch_texts_count") == 2 and after.value("emitlab_batch_texts_sum") == 3
    assert after.value("emitlab_batch_texts_bucket", le="1.0") == 1
    assert after.value("emitlab_batch_requests_count") == 2 and after.value("emitlab_batch_requests_sum") == 2
    assert after.value("emitlab_batch_duration_seconds_count") == 2
    assert after.value("emitlab_queue_depth") == 0 and after.value("emitlab_batch_errors_total") == 0
    assert untouched.value("emitlab_requests_total", endpoint="/predict", status="200") == 0
    assert untouched.value("emitlab_batch_texts_count") == 0
    assert REGISTRY.get_sample_value("emitlab_batch_texts_count") is None  # not the global registry


def test_queue_depth_gauge_follows_the_queue():
    fake = FakeClassifier()
    app = create_app(fake, max_texts=8, max_chars=100, max_batch_texts=1, max_wait_ms=0)
    with TestClient(app) as client:
        fake.gate.close()
        boxes = [in_thread(lambda i=i: client.post("/predict", json={"text": f"t{i}"})) for i in range(4)]
        wait_for(lambda: fake.gate.entered == 1 and app.state.batcher.queue_depth == 3, "three queued requests")
        assert scrape(client).value("emitlab_queue_depth") == 3
        fake.gate.open()
        assert all(finished(b).status_code == 200 for b in boxes)
        final = scrape(client)
    assert final.value("emitlab_queue_depth") == 0 and final.value("emitlab_batch_texts_count") == 4


# ----------------------------------------------------------------------------- the tiny ensemble

#: Responses are rounded to 6 decimals (up to 5e-7 off); batching adds float noise (padding changes
#: the transformer's sums): about 3e-9 on the tiny ensemble, 64 texts together vs one at a time.
TOL = 1e-6


def test_concurrent_clients_on_the_tiny_ensemble(tiny_ensemble_export):
    clf = load_classifier(tiny_ensemble_export)
    app = create_app(clf, max_texts=8, max_chars=200, model_name="tiny", max_batch_texts=32, max_wait_ms=20)
    words = ["felice evviva", "che paura terrore", "triste lacrime", "amore cuore ❤️", "rabbia furioso oggi",
             "schifo vergogna", "sorpresa incredibile", "fiducia speranza domani"]
    requests = [[f"{words[(i + j) % len(words)]} {'!' * (j % 3)} numero {i}" for j in range(1 + (i * 7) % 5)]
                for i in range(50)]
    alone = [clf.predict_proba(texts) for texts in requests]
    with TestClient(app) as client:
        responses = post_all(client, requests)
        batches = scrape(client)
    worst = 0.0
    for texts, probs, r in zip(requests, alone, responses):
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["text"] for p in preds] == texts
        got = np.array([[p["probabilities"][k] for k in clf.label_names] for p in preds])
        worst = max(worst, float(np.abs(got - probs).max()))
        assert [p["labels"] for p in preds] == [row["labels"] for row in rows_from_probs(probs, clf.decode(probs),
                                                                                          clf.label_names)]
    assert worst <= TOL, worst
    n_batches = batches.value("emitlab_batch_requests_count")
    assert batches.value("emitlab_batch_requests_sum") == len(requests)
    assert n_batches < len(requests)  # requests were merged
    assert batches.value("emitlab_batch_texts_sum") == sum(len(t) for t in requests)
