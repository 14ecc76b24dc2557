"""A small HTTP service around an exported :class:`~emitlab.inference.EmotionClassifier`.

    >>> from emitlab.inference import EmotionClassifier
    >>> app = create_app(EmotionClassifier.from_pretrained("runs/full/model"))
    >>> # uvicorn.run(app) -- or: emitlab serve --model runs/full/model

The whole exported ensemble is served: every member's fold models, the combiner and the
calibrated decoder, exactly as ``emitlab predict`` and the Python API use them.

Endpoints: ``POST /predict`` (one text or a list), ``GET /labels`` (labels, thresholds and
decoding rules), ``GET /health``, ``GET /metrics`` (Prometheus), ``GET /`` (a self-contained
demo page) and the OpenAPI documentation at ``/docs`` and ``/openapi.json``. Every response's
``model`` describes what is served: the model kind, the members with their fold counts and
backends, the combiner.

Dynamic micro-batching (:mod:`emitlab.serving.batching`): ``/predict`` validates its texts and
puts them on a queue; one worker thread takes up to ``max_batch_texts`` texts -- whole requests,
first come first served -- or what has arrived ``max_wait_ms`` after the oldest waiting request
(it waits for companions only under concurrent load, i.e. when the previous batch took more than
one request; a lone client's request runs at once), makes ONE ``predict_proba`` + decode over
all of them and answers every request with exactly its own rows, in order. The endpoint awaits
its future, so a waiting request holds no thread. Only
the worker runs the model (torch already uses every core for one batch, and tokenizer/model state
is never shared between two threads). A request with more than ``max_batch_texts`` texts runs
alone, unsplit. When a model call fails, the requests of that batch get 500 with a JSON
``detail`` and the next batch runs as usual. ``max_batch_texts=1, max_wait_ms=0`` is the old
serialised server (one model call per request, one at a time).

Shutdown (the app's lifespan): the batcher stops taking requests -- ``/predict`` answers 503
and ``/health`` 503 ``shutting down`` -- finishes the running batch and the requests already
queued, and only then lets the process end (at most ``drain_timeout_s``; whatever is still
queued then gets 503). uvicorn itself stops accepting connections and waits for the open
requests first.

``GET /metrics``: Prometheus text format (:mod:`emitlab.serving.metrics`, one registry per app):
requests by endpoint and status, errors, request latency, texts and requests per batch, batch
time, failed batches and the queue depth.

Request bodies are limited before anything parses them (:class:`BodyLimit`): a body over
``max_body_bytes`` gets 413, whether it announces its length or streams it in chunks. The
default limit is the size of the largest valid request, so it never refuses one.
"""

# No ``from __future__ import annotations``: FastAPI must see the request model defined inside
# _predict_request_model as a class, not as a string it cannot resolve from the module's globals.

import asyncio
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from emitlab.serving.batching import BatchError, MicroBatcher, ShuttingDown
from emitlab.serving.metrics import RequestMetrics, ServingMetrics

DECODING_RULES = {
    "threshold": "A label is predicted when its probability is >= its threshold (chosen on validation data).",
    "at_least_one": ("When no label reaches its threshold, the label with the largest margin "
                     "(probability - threshold) is predicted."),
    "neutral_exclusive": ("When Neutral comes with other labels, Neutral alone is kept if its margin beats "
                          "every other margin, else Neutral is dropped."),
}


# ----------------------------------------------------------------------------- schemas


class Prediction(BaseModel):
    text: str = Field(description="The input text, as sent.")
    labels: list[str] = Field(description="Predicted labels after thresholds and decoding rules.")
    probabilities: dict[str, float] = Field(description="Probability per label (sigmoid of the logit), 0..1.")


class MemberInfo(BaseModel):
    name: str = Field(description="Member name in the export (e.g. tfidf, lexicon, transformer).")
    kind: str = Field(description="Model family: tfidf, lexicon or transformer.")
    folds: int = Field(description="Fold models whose probabilities are averaged for this member.")
    backend: str = Field(description="Where it runs: torch, onnx or onnx-int8 for a transformer, numpy otherwise.")
    weight: Optional[float] = Field(None, description="Its weight in an average combiner (none for a stacker).")
    base_model: Optional[str] = Field(None, description="Encoder a transformer member was fine-tuned from.")
    max_length: Optional[int] = Field(None, description="A transformer member truncates texts to this many tokens.")


class CombinerInfo(BaseModel):
    kind: str = Field(description="average (weighted mean of the members) or stacker (per-label logistic "
                                  "regression over every member's logits).")
    space: Optional[str] = Field(None, description="What an average combiner averages: prob or logit.")
    members: list[str] = Field(default_factory=list, description="The members it combines, in order.")
    description: Optional[str] = Field(None, description="The combiner in words, as the report names it.")


class ModelInfo(BaseModel):
    name: Optional[str] = Field(None, description="Name of the export (folder or zip name).")
    task: Optional[str] = Field(None, description="EMit subtask: A (emotions) or B (direction/topic).")
    model_kind: Optional[str] = Field(None, description="The model the run chose and exported, e.g. stacker, "
                                                        "average_prob or one member alone (tfidf, transformer).")
    backend: str = Field("torch", description="Backend of the transformer members (the others run in numpy).")
    n_labels: int
    members: list[MemberInfo] = Field(default_factory=list, description="The members of the ensemble.")
    combiner: Optional[CombinerInfo] = Field(None, description="How the members' probabilities are combined.")
    base_model: Optional[str] = Field(None, description="Encoder of the (first) transformer member, if any.")
    max_length: Optional[int] = Field(None, description="Texts are truncated to this many tokens by the transformer "
                                                        "members (none without one).")
    macro_f1: dict[str, float] = Field(default_factory=dict, description="Macro-F1 at export time, per evaluation set.")
    nested_macro_f1: Optional[float] = Field(None, description="Nested out-of-fold macro-F1 of the exported model "
                                                               "(combiner and calibration fitted on other folds).")


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: ModelInfo
    elapsed_ms: float = Field(description="Server-side time spent on this request.")


class LabelsResponse(BaseModel):
    labels: list[str] = Field(description="Label names, in the model's output order.")
    thresholds: dict[str, float] = Field(description="Decision threshold per label.")
    decoding: dict[str, Any] = Field(
        description="Decoding rules applied after the thresholds (flags and their meaning).")
    limits: dict[str, int] = Field(
        description="Request limits: max_texts per request, max_chars per text, max_body_bytes per request body.")
    model: ModelInfo


class BatchingInfo(BaseModel):
    max_batch_texts: int = Field(description="Most texts per model call (a larger request runs alone).")
    max_wait_ms: float = Field(description="Longest wait for companions after the oldest queued request.")
    batch_size: int = Field(description="Texts per forward pass of the transformer members within one model "
                                        "call (the call's texts sorted by length first).")
    queue_depth: int = Field(description="Requests waiting for a batch now.")
    batches_run: int = Field(description="Model calls made so far.")


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"], description="ok, or shutting down (then with status 503).")
    model: ModelInfo
    uptime_s: float
    requests_served: int
    batching: Optional[BatchingInfo] = None


class ErrorResponse(BaseModel):
    detail: str = Field(description="What was wrong with the request.")


# ----------------------------------------------------------------------------- app


def _member_info(name: str, folds: list, backend: str, weight: float | None, spec: dict) -> MemberInfo:
    from emitlab.registry import MEMBERS

    kind = str((getattr(folds[0], "kind", None) if folds else None) or spec.get("kind") or "unknown")
    network = kind in MEMBERS and getattr(MEMBERS.get(kind), "network", False)
    info = MemberInfo(name=name, kind=kind, folds=len(folds) or len(spec.get("folds", [])), weight=weight,
                      backend=backend if network else "numpy")
    if network and folds:
        first = folds[0]
        predictor = getattr(first, "predictor", None)
        info.base_model = getattr(first, "base_model", None)
        info.max_length = int(predictor.max_length) if predictor is not None else None
    return info


def _model_info(classifier, name: str | None) -> ModelInfo:
    """What is served, from the classifier's loaded members and its export's ``emitlab.json``."""
    meta = getattr(classifier, "meta", None) or {}
    metrics = meta.get("metrics") or {}
    backend = str(getattr(classifier, "backend", None) or "torch")
    loaded = list(getattr(classifier, "members", None) or [])  # [(name, [fold models])]
    specs = {m.get("name"): m for m in meta.get("members") or []}
    from emitlab.engine.ensemble import describe_combiner, member_weights

    combiner = meta.get("combiner") or {}
    names = [member_name for member_name, _ in loaded]
    weights = member_weights(combiner, names)
    members = []
    for i, (member_name, folds) in enumerate(loaded):
        weight = weights[i] if weights is not None else None
        members.append(_member_info(member_name, list(folds), backend, weight, specs.get(member_name, {})))
    transformers = [m for m in members if m.base_model is not None or m.max_length is not None]
    nested = meta.get("nested_macro_f1")
    return ModelInfo(
        name=name,
        task=meta.get("task"),
        model_kind=meta.get("model_kind"),
        backend=backend,
        n_labels=len(classifier.label_names),
        members=members,
        combiner=CombinerInfo(kind=str(combiner["kind"]), space=combiner.get("space"),
                              members=[m.name for m in members],
                              description=describe_combiner(combiner, names)) if combiner.get("kind") else None,
        base_model=transformers[0].base_model if transformers else None,
        max_length=max((m.max_length for m in transformers if m.max_length), default=None),
        macro_f1={k: round(float(v), 4) for k, v in metrics.items() if isinstance(v, (int, float))},
        nested_macro_f1=round(float(nested), 4) if isinstance(nested, (int, float)) else None,
    )


def default_max_body_bytes(max_texts: int, max_chars: int) -> int:
    """The largest valid request body, at least 64 KiB.

    In JSON a character takes at most 12 bytes (an astral character written as two ``\\uXXXX``
    escapes, as Python's ``json.dumps`` does); 64 bytes per text cover quotes, commas and
    spacing. With the defaults (64 texts of 2000 characters) this is about 1.5 MiB.
    """
    return max(64 * 1024, max_texts * (12 * max_chars + 64))


class BodyLimit:
    """ASGI middleware: answer 413 to a request body over ``max_bytes`` before it is parsed.

    A larger ``Content-Length`` is refused at once; otherwise the body is read and counted
    here, so a chunked body (no ``Content-Length``) is stopped as soon as it passes the limit,
    and the application gets the body only when it is within the limit.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"").strip()
        if length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send, f"{int(length)} bytes, at most {self.max_bytes}")
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send, f"more than {self.max_bytes} bytes")
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send, size: str) -> None:
        detail = f"request body too large: {size} (max_body_bytes); send fewer or shorter texts"
        await JSONResponse({"detail": detail}, 413)(scope, receive, send)


def index_html() -> str:
    return resources.files("emitlab.serving").joinpath("static/index.html").read_text(encoding="utf-8")


class _Served:
    """What the routes of one app share: the model's description, labels and decoder, the request
    limits, the batcher, the metrics and the count of answered ``/predict`` requests."""

    def __init__(self, info: ModelInfo, classifier, limits: dict[str, int], batcher: MicroBatcher,
                 metrics: ServingMetrics, batch_size: int):
        self.info = info
        self.labels = list(classifier.label_names)
        self.decoder = classifier.decoder
        self.limits = limits  # max_texts, max_chars, max_body_bytes
        self.batcher = batcher
        self.batch_size = batch_size  # texts per forward pass within a model call
        self.metrics = metrics
        self.started = time.time()
        self.requests_served = 0
        self._lock = threading.Lock()  # a TestClient without a lifespan runs each request on its own loop

    def count_request(self) -> None:
        with self._lock:
            self.requests_served += 1


def _checked_limits(max_texts: int, max_chars: int, max_body_bytes: int | None) -> int:
    """Refuse limits below 1; returns ``max_body_bytes`` (default :func:`default_max_body_bytes`)."""
    if max_texts < 1 or max_chars < 1:
        raise ValueError("max_texts and max_chars must be at least 1")
    if max_body_bytes is None:
        max_body_bytes = default_max_body_bytes(max_texts, max_chars)
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    return max_body_bytes


#: Texts per forward pass within one model call, by where the transformer members run. A model call
#: holds whatever requests met in the batcher, unsorted; the predictor sorts them by length and cuts
#: them into passes, each padded to its own longest text. On a CPU short passes waste less padding
#: (benchmarks/serving.py --batch-sizes, README); on an accelerator the padding is nearly free and
#: fewer, larger passes win.
CPU_BATCH_SIZE = 8
ACCELERATOR_BATCH_SIZE = 32


def default_batch_size(classifier) -> int:
    """:data:`ACCELERATOR_BATCH_SIZE` when any transformer member runs off the CPU, else
    :data:`CPU_BATCH_SIZE` (also for an ensemble without transformer members, which ignores it)."""
    for fm in getattr(classifier, "transformer_folds", []):
        device = getattr(getattr(getattr(fm, "predictor", None), "engine", None), "device", None)
        if device is not None and getattr(device, "type", str(device)) != "cpu":
            return ACCELERATOR_BATCH_SIZE
    return CPU_BATCH_SIZE


def _build_batcher(classifier, batch_size: int, max_batch_texts: int, max_wait_ms: float,
                   metrics: ServingMetrics) -> MicroBatcher:
    """The micro-batcher whose worker makes one ``predict_proba`` + decode per batch."""
    from emitlab.inference import rows_from_probs

    labels = list(classifier.label_names)

    def run_batch(texts: list[str]) -> list[dict]:
        """One model call for a whole batch (in the batcher's worker thread)."""
        probs = classifier.predict_proba(texts, batch_size)
        return rows_from_probs(probs, classifier.decode(probs), labels)

    return MicroBatcher(run_batch, max_batch_texts=max_batch_texts, max_wait_ms=max_wait_ms,
                        on_batch=metrics.on_batch, on_queue=metrics.on_queue)


def _lifespan(batcher: MicroBatcher, drain_timeout_s: float):
    """The app's lifespan: start the batcher, and at shutdown drain it (at most ``drain_timeout_s``)."""

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        try:
            yield
        finally:
            # refuse new requests, finish the running batch and the queued ones, then let go
            await run_in_threadpool(batcher.close, drain_timeout_s)

    return lifespan


def _predict_request_model(max_texts: int, max_chars: int) -> type[BaseModel]:
    """The body of ``POST /predict``; its field descriptions state this app's limits."""

    class PredictRequest(BaseModel):
        """Either ``text`` (one text) or ``texts`` (a list), not both."""

        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"text": "Che bella giornata, sono felicissima!"},
                                            {"texts": ["Che schifo, mi vergogno per loro.", "Ti amo tanto ❤️"]}]},
        )
        text: Optional[str] = Field(None, description=f"One text (at most {max_chars} characters).")
        texts: Optional[list[str]] = Field(
            None, description=f"A list of 1 to {max_texts} texts, each at most {max_chars} characters.")

    return PredictRequest


def _request_texts(req, max_texts: int, max_chars: int) -> list[str]:
    """The texts of a ``/predict`` body, or the HTTPException (413, 422) that says what is wrong."""
    if req.text is not None and req.texts is not None:
        raise HTTPException(422, "send either 'text' (one string) or 'texts' (a list of strings), not both")
    if req.text is None and req.texts is None:
        raise HTTPException(422, "the body needs 'text' (one string) or 'texts' (a list of strings)")
    if req.text is not None:
        texts, names = [req.text], ["text"]
    else:
        texts = req.texts
        if not texts:
            raise HTTPException(422, "'texts' is empty: send at least one text")
        if len(texts) > max_texts:
            raise HTTPException(413, f"too many texts: {len(texts)} in one request, at most {max_texts} "
                                     f"(max_texts); split them into several requests")
        names = [f"texts[{i}]" for i in range(len(texts))]
    for name, t in zip(names, texts):
        if not t.strip():
            raise HTTPException(422, f"{name} is empty")
        if len(t) > max_chars:
            raise HTTPException(422, f"{name} is too long: {len(t)} characters, at most {max_chars} (max_chars)")
    return texts


def _new_app(labels: list[str], lifespan) -> FastAPI:
    """The FastAPI application with its OpenAPI title and description, no routes yet."""
    return FastAPI(
        title="emitlab emotion classifier",
        version="1",
        description=(
            "Multilabel emotion detection for Italian social-media text (EMit, EVALITA 2023).\n\n"
            f"Labels: {', '.join(labels)}. `POST /predict` returns per-label probabilities and the labels "
            "decoded with per-label thresholds (see `GET /labels`). The demo page is at `/`. Concurrent "
            "requests are micro-batched into one model call; `GET /metrics` has Prometheus metrics."
        ),
        lifespan=lifespan,
    )


def _add_middleware(app: FastAPI, metrics: ServingMetrics, max_body_bytes: int) -> None:
    """The body limit, and outside it the request metrics."""
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    # added last = outermost: counts every request, the body limit's 413s too
    app.add_middleware(RequestMetrics, metrics=metrics,
                       endpoints=lambda: [getattr(r, "path", None) for r in app.routes])


def _add_predict_route(app: FastAPI, served: _Served, request_model: type[BaseModel]) -> None:
    """``POST /predict`` with the body ``request_model`` (:func:`_predict_request_model`): validate the
    texts, queue them on the batcher and await their rows."""
    max_texts, max_chars = served.limits["max_texts"], served.limits["max_chars"]

    @app.post("/predict", response_model=PredictResponse, summary="Classify one or more texts",
              responses={413: {"model": ErrorResponse,
                                    "description": "More than max_texts texts, or a body over max_body_bytes."},
                         422: {"description": "Empty or too long text, or a malformed body."},
                         500: {"model": ErrorResponse, "description": "The model call of this request's batch failed."},
                         503: {"model": ErrorResponse, "description": "The server is shutting down."}})
    async def predict(req: request_model) -> PredictResponse:
        t0 = time.perf_counter()
        texts = _request_texts(req, max_texts, max_chars)
        try:
            rows = await asyncio.wrap_future(served.batcher.submit(texts))
        except ShuttingDown as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from None
        except BatchError as exc:
            raise HTTPException(500, str(exc)) from None
        served.count_request()
        return PredictResponse(
            predictions=[Prediction(text=t, **r) for t, r in zip(texts, rows)],
            model=served.info,
            elapsed_ms=round((time.perf_counter() - t0) * 1000, 2),
        )


def _add_info_routes(app: FastAPI, served: _Served) -> None:
    """``GET /labels`` (labels, thresholds, decoding rules, limits) and ``GET /health``."""
    decoder, batcher = served.decoder, served.batcher
    thresholds = {n: round(float(t), 6) for n, t in zip(served.labels, decoder.thresholds)}

    @app.get("/labels", response_model=LabelsResponse, summary="Labels, thresholds and decoding rules")
    def get_labels() -> LabelsResponse:
        decoding = {
            "at_least_one": bool(decoder.at_least_one),
            "neutral_exclusive": bool(decoder.neutral_exclusive),
            "rules": [DECODING_RULES["threshold"]]
            + [DECODING_RULES[k] for k in ("at_least_one", "neutral_exclusive") if getattr(decoder, k)],
        }
        return LabelsResponse(labels=served.labels, thresholds=thresholds, decoding=decoding,
                              limits=dict(served.limits), model=served.info)

    @app.get("/health", response_model=HealthResponse, summary="Liveness check",
             responses={503: {"model": HealthResponse, "description": "The server is shutting down."}})
    def health():
        body = HealthResponse(status="shutting down" if batcher.closing else "ok", model=served.info,
                              uptime_s=round(time.time() - served.started, 1),
                              requests_served=served.requests_served,
                              batching=BatchingInfo(max_batch_texts=batcher.max_batch_texts,
                                                    max_wait_ms=batcher.max_wait_ms, batch_size=served.batch_size,
                                                    queue_depth=batcher.queue_depth, batches_run=batcher.batches_run))
        if batcher.closing:
            return JSONResponse(body.model_dump(mode="json"), 503)
        return body


def _add_page_routes(app: FastAPI, metrics: ServingMetrics) -> None:
    """``GET /metrics`` (Prometheus text) and ``GET /`` (the demo page), both outside the OpenAPI schema."""

    @app.get("/metrics", include_in_schema=False)
    def get_metrics() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    page = index_html()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)


def create_app(classifier, max_texts: int = 64, max_chars: int = 2000, model_name: str | None = None,
               batch_size: int | None = None, max_body_bytes: int | None = None, max_batch_texts: int = 64,
               max_wait_ms: float = 5.0, drain_timeout_s: float = 60.0):
    """The FastAPI application serving ``classifier`` (an :class:`EmotionClassifier`).

    ``max_texts``: most texts per ``/predict`` request (more: 413). ``max_chars``: longest
    text in characters (longer: 422 naming the index). ``model_name``: shown in responses.
    ``max_body_bytes``: largest request body (more: 413, before parsing); default
    :func:`default_max_body_bytes`. ``batch_size``: texts per forward pass of the transformer
    members inside one model call (default: :func:`default_batch_size`). ``max_batch_texts`` /
    ``max_wait_ms``: micro-batching (see the module docstring; ``1`` / ``0`` serialise the
    requests). ``drain_timeout_s``: longest wait at shutdown for the running batch and the queued
    requests.

    ``app.state.batcher`` is the :class:`~emitlab.serving.batching.MicroBatcher` and
    ``app.state.metrics`` the :class:`~emitlab.serving.metrics.ServingMetrics`.
    """
    max_body_bytes = _checked_limits(max_texts, max_chars, max_body_bytes)
    info = _model_info(classifier, model_name)
    metrics = ServingMetrics()
    batch_size = int(batch_size or default_batch_size(classifier))
    batcher = _build_batcher(classifier, batch_size, max_batch_texts, max_wait_ms, metrics)
    served = _Served(info, classifier, {"max_texts": max_texts, "max_chars": max_chars,
                                        "max_body_bytes": max_body_bytes}, batcher, metrics, batch_size)
    app = _new_app(served.labels, _lifespan(batcher, drain_timeout_s))
    app.state.classifier = classifier
    app.state.batcher = batcher
    app.state.batch_size = batch_size
    app.state.metrics = metrics
    _add_middleware(app, metrics, max_body_bytes)
    _add_predict_route(app, served, _predict_request_model(max_texts, max_chars))
    _add_info_routes(app, served)
    _add_page_routes(app, metrics)
    return app


def load_classifier(model: str | Path, backend: str = "torch", device: str | None = None):
    """The whole exported ensemble (folder or .zip): ``EmotionClassifier.from_pretrained``. The
    transformer members run on ``backend`` (their ONNX files are exported first when missing)."""
    from emitlab.inference import EmotionClassifier

    return EmotionClassifier.from_pretrained(model, device=device or None, backend=backend or "torch")
