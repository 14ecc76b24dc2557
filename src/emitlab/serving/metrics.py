"""Prometheus metrics of one ``emitlab serve`` app, in its own :class:`CollectorRegistry`.

Each app gets a fresh registry (never the process-global one), so several apps can live in one
process -- tests build many -- without "Duplicated timeseries" errors or shared counts.
``GET /metrics`` returns :meth:`ServingMetrics.render` in the Prometheus text format.

=====================================  ======================================================
``emitlab_requests_total``             HTTP requests by ``endpoint`` and ``status`` (413s of
                                       the body limit included)
``emitlab_request_errors_total``       responses with status >= 400 by ``endpoint`` and
                                       ``kind``: ``client`` (4xx) or ``server`` (5xx)
``emitlab_request_duration_seconds``   histogram of the time from receiving a request to the
                                       end of its response, by ``endpoint``
``emitlab_batch_texts``                histogram of the texts per model call
``emitlab_batch_requests``             histogram of the requests merged into one model call
``emitlab_batch_duration_seconds``     histogram of the model call time per batch
``emitlab_batch_errors_total``         model calls that failed (each fails its requests)
``emitlab_queue_depth``                gauge: requests waiting for a batch
=====================================  ======================================================

``endpoint`` is the route's path for the app's own routes and ``other`` for anything else
(404s), so a scan of random paths cannot blow up the number of series.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("emitlab_requests", "HTTP requests by endpoint and status.",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("emitlab_request_errors", "HTTP responses with status >= 400, by endpoint and "
                              "kind (client: 4xx, server: 5xx).", ["endpoint", "kind"], registry=r)
        self.latency = Histogram("emitlab_request_duration_seconds", "Time from receiving a request to the end "
                                 "of its response.", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_texts = Histogram("emitlab_batch_texts", "Texts per model call.", buckets=SIZE_BUCKETS,
                                     registry=r)
        self.batch_requests = Histogram("emitlab_batch_requests", "Requests merged into one model call.",
                                        buckets=SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram("emitlab_batch_duration_seconds", "Model call time per batch.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_errors = Counter("emitlab_batch_errors", "Model calls that failed (each fails the requests "
                                    "of its batch).", registry=r)
        self.queue_depth = Gauge("emitlab_queue_depth", "Requests waiting for a batch.", registry=r)

    # hooks of MicroBatcher
    def on_batch(self, texts: int, requests: int, seconds: float, failed: bool) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        self.batch_seconds.observe(seconds)
        if failed:
            self.batch_errors.inc()

    def on_queue(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint=endpoint, kind="server" if status >= 500 else "client").inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: counts every HTTP request and times it, by endpoint and status. It sits
    outermost, so the body limit's 413s are counted; an exception escaping the app counts as 500."""

    def __init__(self, app, metrics: ServingMetrics, endpoints) -> None:
        self.app = app
        self.metrics = metrics
        self._endpoints = endpoints  # a callable returning the known paths (the routes exist only later)
        self._known: frozenset[str] | None = None

    def endpoint(self, path: str) -> str:
        if self._known is None:
            self._known = frozenset(self._endpoints())
        return path if path in self._known else "other"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(self.endpoint(scope.get("path", "")), status, time.perf_counter() - t0)
