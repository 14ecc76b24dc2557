"""Dynamic micro-batching: many requests, one model call.

Requests put their texts on a queue (:meth:`MicroBatcher.submit` returns a
:class:`concurrent.futures.Future` at once). One worker thread takes the oldest waiting request
and waits for companions until either ``max_batch_texts`` texts are queued or ``max_wait_ms``
have passed since that oldest request arrived, then makes ONE ``run_batch`` call over the texts
of every request it took and gives each request exactly its own rows, in order.

Rules:

* **Whole requests, first come first served.** A batch is a run of whole requests from the
  head of the queue whose texts add up to at most ``max_batch_texts``; the request that would
  overflow it waits for the next batch (it is then the oldest, so it goes first). A request
  with *more* than ``max_batch_texts`` texts is never split: it runs alone, as one batch of its
  own, so all of its rows come from a single model call.
* **No waiting when there is a backlog.** The deadline counts from the oldest request's
  arrival, so requests that queued up while the previous batch ran go at once.
* **No waiting without load.** The worker waits for companions only while the server is under
  concurrent load: when the previous batch took more than one request, or several requests are
  waiting already. A lone client (the
  previous batch was one request) never pays ``max_wait_ms``; its request runs at once. As soon
  as two requests meet in one batch, the next batches wait again.
* **Errors stay in their batch.** When ``run_batch`` raises (or returns the wrong number of
  rows), every request of that batch gets :class:`BatchError`, and the worker goes on with
  the next batch. Nothing is left pending: the worker answers every future it takes.
* **One model call at a time.** Only the worker thread calls ``run_batch``, so the model is
  never entered from two threads at once (torch already uses every core for one batch).
* **Graceful close.** :meth:`MicroBatcher.close` refuses new work (:class:`ShuttingDown`),
  lets the worker finish the batch it is running *and* the requests already queued (without
  waiting for companions any more), then ends the worker. If that takes longer than its
  ``timeout``, the requests still queued get :class:`ShuttingDown` instead.
* **Cancelled requests are skipped.** A future cancelled while it waits (the client went
  away) is dropped when the worker reaches it, costing no model time.

``max_batch_texts=1, max_wait_ms=0`` reproduces the serialised server: every request is its
own model call, one at a time, in arrival order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence


class ShuttingDown(RuntimeError):
    """The batcher is closing: it takes no new requests (HTTP 503)."""


class BatchError(RuntimeError):
    """The model call of the batch this request was part of failed (HTTP 500)."""


@dataclass
class _Pending:
    texts: list[str]
    future: Future
    enqueued: float  # time.monotonic() at submit


#: ``on_batch(texts, requests, seconds, failed)``: called after every model call.
BatchHook = Callable[[int, int, float, bool], None]
#: ``on_queue(requests_waiting)``: called whenever the queue changes.
QueueHook = Callable[[int], None]


class MicroBatcher:
    """Collects requests into batches for ``run_batch(texts) -> rows`` (one row per text, any
    sliceable sequence: a list or a numpy array)."""

    def __init__(self, run_batch: Callable[[list[str]], Sequence[Any]], max_batch_texts: int = 64,
                 max_wait_ms: float = 5.0, on_batch: Optional[BatchHook] = None,
                 on_queue: Optional[QueueHook] = None, name: str = "emitlab-batcher"):
        if max_batch_texts < 1:
            raise ValueError("max_batch_texts must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be at least 0")
        self.run_batch = run_batch
        self.max_batch_texts = int(max_batch_texts)
        self.max_wait_ms = float(max_wait_ms)
        self._on_batch = on_batch
        self._on_queue = on_queue
        self._name = name
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._queued_texts = 0
        self._thread: Optional[threading.Thread] = None
        self._closing = False
        self.batches_run = 0  # model calls made (failed ones included)
        self._last_batch_requests = 0  # requests in the previous batch: > 1 means concurrent load

    # ------------------------------------------------------------------ state

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the batch being run)."""
        with self._cond:
            return len(self._queue)

    @property
    def closing(self) -> bool:
        with self._cond:
            return self._closing

    @property
    def running(self) -> bool:
        with self._cond:
            return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker (idempotent). After a finished :meth:`close`, opens the batcher
        again with a new worker; during one, does nothing."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._closing = False
            self._start_locked()

    def _start_locked(self) -> None:
        self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API

    def submit(self, texts: Sequence[str]) -> Future:
        """Queue ``texts`` (one request); the future's result is their rows, in order. Raises
        :class:`ShuttingDown` once :meth:`close` has begun. Starts the worker when needed."""
        texts = list(texts)
        if not texts:
            raise ValueError("a request needs at least one text")
        future: Future = Future()
        with self._cond:
            if self._closing:
                raise ShuttingDown("the server is shutting down: it takes no new requests")
            if self._thread is None:
                self._start_locked()
            self._queue.append(_Pending(texts, future, time.monotonic()))
            self._queued_texts += len(texts)
            depth = len(self._queue)
            self._cond.notify_all()
        self._queue_changed(depth)
        return future

    def predict(self, texts: Sequence[str], timeout: Optional[float] = None):
        """Blocking :meth:`submit`: the rows of ``texts`` (raises what the future raises)."""
        return self.submit(texts).result(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Stop taking requests, finish the running batch and the queued requests, end the
        worker. Returns True when everything finished within ``timeout`` seconds (None: wait
        as long as it takes); otherwise the requests still queued get :class:`ShuttingDown`
        (a batch already running is answered by the worker whenever its model call returns)."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is None or not thread.is_alive():
            return True
        self._fail_queued(ShuttingDown("the server shut down before this request's batch could run"))
        return False

    # ------------------------------------------------------------------ worker

    def _queue_changed(self, depth: int) -> None:
        if self._on_queue is not None:
            try:
                self._on_queue(depth)
            except Exception:  # a metrics hook must never break serving
                pass

    def _fail_queued(self, exc: BaseException) -> None:
        with self._cond:
            pending = list(self._queue)
            self._queue.clear()
            self._queued_texts = 0
        self._queue_changed(0)
        for p in pending:
            if p.future.set_running_or_notify_cancel():
                p.future.set_exception(exc)

    def _work(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._run(batch)
        finally:
            # normally the queue is empty here; after an unexpected error in the worker itself,
            # fail whatever waits (and refuse new work) rather than leave requests hanging
            with self._cond:
                leftovers = bool(self._queue)
                if leftovers:
                    self._closing = True
            if leftovers:
                self._fail_queued(ShuttingDown("the batching worker stopped"))

    def _next_batch(self) -> Optional[list[_Pending]]:
        """Wait for a batch (None when closing with nothing left to do)."""
        with self._cond:
            while True:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return None
                under_load = self._last_batch_requests > 1 or len(self._queue) > 1
                deadline = self._queue[0].enqueued + (self.max_wait_ms / 1000.0 if under_load else 0.0)
                while self._queued_texts < self.max_batch_texts and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch: list[_Pending] = []
                n = 0
                while self._queue:
                    head = self._queue[0]
                    if batch and n + len(head.texts) > self.max_batch_texts:
                        break
                    self._queue.popleft()
                    self._queued_texts -= len(head.texts)
                    if not head.future.set_running_or_notify_cancel():
                        continue  # cancelled while it waited
                    batch.append(head)
                    n += len(head.texts)
                    if n >= self.max_batch_texts:
                        break
                depth = len(self._queue)
                if batch:
                    self._last_batch_requests = len(batch)
                    break
        self._queue_changed(depth)
        return batch

    def _run(self, batch: list[_Pending]) -> None:
        texts = [t for p in batch for t in p.texts]
        t0 = time.perf_counter()
        error: Optional[BaseException] = None
        rows: Sequence[Any] = ()
        try:
            rows = self.run_batch(texts)
            if len(rows) != len(texts):
                raise RuntimeError(f"the model returned {len(rows)} rows for {len(texts)} texts")
        except BaseException as exc:  # answered below; non-Exceptions are re-raised after that
            error = exc
        seconds = time.perf_counter() - t0
        self.batches_run += 1
        if error is not None:
            first = (str(error).strip().splitlines() or [""])[0]
            what = f"{type(error).__name__}: {first}" if first else type(error).__name__
            for p in batch:
                exc = BatchError(f"prediction failed for the batch of {len(texts)} texts "
                                 f"({len(batch)} requests) this request was part of: {what}")
                exc.__cause__ = error
                p.future.set_exception(exc)
        else:
            start = 0
            for p in batch:
                p.future.set_result(rows[start:start + len(p.texts)])
                start += len(p.texts)
        if self._on_batch is not None:
            try:
                self._on_batch(len(texts), len(batch), seconds, error is not None)
            except Exception:
                pass
        if error is not None and not isinstance(error, Exception):
            raise error
