"""Delivery of the local gateway's asynchronous calls, as OpenFaaS's queue-worker does it.

Dispatcher threads take jobs from the :class:`~faasflow.runtime.queue.DurableQueue` and call
the function on a worker. A job that finds no worker, or is answered 429/502/503/504, is tried
again with backoff, up to ``max_attempts`` deliveries; then it is a dead letter. Every delivery
carries the same ``X-Call-Id`` and its attempt number in ``X-Faas-Flow-Attempt`` (1 for the
first), so a flow can tell a redelivery from a new call. Attempts and dead letters are logged
at WARNING with the call id and the function.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping

import requests

from faasflow.engine.ids import DEAD_LETTER_HEADER
from faasflow.runtime.queue import Job
from faasflow.runtime.queues import Queue
from faasflow.runtime.upstream import WorkerUnreachable
from faasflow.runtime.workers import WorkerPool

__all__ = ["ATTEMPT_HEADER", "HOP_BY_HOP", "RETRY_STATUSES", "Dispatcher"]

log = logging.getLogger("faasflow.gateway")

#: Statuses after which an asynchronous delivery is tried again (as OpenFaaS's queue-worker).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: The header carrying the delivery's attempt number (1, 2, ...).
ATTEMPT_HEADER = "X-Faas-Flow-Attempt"
_FORWARD = re.compile(r"^/flow/[^/]+/forward$")
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer",
    "proxy-authorization", "proxy-authenticate", "host", "content-length",
})


class Dispatcher:
    """The threads delivering queued calls."""

    def __init__(self, queue: Queue, pool_of: Mapping[str, WorkerPool], *,
                 threads: int, max_attempts: int, closing: threading.Event,
                 stack_name: str) -> None:
        self.queue = queue
        self.pool_of = pool_of
        self.max_attempts = max(1, max_attempts)
        self.closing = closing
        self.stack_name = stack_name
        self._threads = [
            threading.Thread(target=self._loop, daemon=True, name=f"faasflow-dispatch-{i}")
            for i in range(max(1, threads))
        ]
        self._local = threading.local()
        self._delivering = 0
        self._count = threading.Lock()

    def busy(self) -> bool:
        """True while a delivery is running."""
        with self._count:
            return self._delivering > 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))

    def _loop(self) -> None:
        while True:
            job = self.queue.take()
            if job is None:
                return
            with self._count:
                self._delivering += 1
            try:
                self.deliver(job)
            except Exception:
                log.exception("delivering call %s to %s failed", job.id, job.function)
                self.queue.done(job)
            finally:
                with self._count:
                    self._delivering -= 1

    def deliver(self, job: Job) -> None:
        pool = self.pool_of.get(job.function)
        if pool is None:
            log.warning("dead letter: call %s to %s: the function is not in %s any more",
                        job.id, job.function, self.stack_name)
            self.queue.dead_letter(job, "function not in the stack")
            return
        target = f"/{job.function}{job.path}" + (f"?{job.query}" if job.query else "")
        headers = dict(job.headers)
        headers[ATTEMPT_HEADER] = str(job.attempts + 1)
        started = time.monotonic()
        try:
            _, (status, out_headers, body) = pool.call(job.method, target, headers, job.body)
        except WorkerUnreachable as exc:
            if self.closing.is_set():
                self.queue.release(job)  # stays queued for the next run
                return
            if self._retry(job, f"unreachable: {exc}"):
                return
            status, out_headers = 502, []
            body = f"function {job.function} unreachable: {exc}".encode()
        else:
            if status in RETRY_STATUSES and not self.closing.is_set() and \
                    self._retry(job, f"status {status}"):
                return
        if status >= 400:
            # 410: an iteration of a request that was stopped or ended meanwhile - expected
            log.log(logging.INFO if status == 410 else logging.WARNING,
                    "queued call %s to %s%s (attempt %d) answered %d: %s", job.id,
                    job.function, job.path, job.attempts + 1, status,
                    body[:300].decode(errors="replace").strip())
        if job.callback:
            self._callback(job, status, out_headers, body, time.monotonic() - started)
        if status in RETRY_STATUSES and job.attempts + 1 >= self.max_attempts:
            self._give_up(job, pool, target, f"status {status}")
            self.queue.dead_letter(job, f"status {status}")
        else:
            self.queue.done(job)

    def settle_elsewhere(self, job: Job, status: int | None, why: str) -> None:
        """A claimed job a worker ran itself (see :mod:`~faasflow.runtime.kept`) and handed
        back: answered ``status`` (a retry status), or not run at all (``None``). It is tried
        again with backoff like a delivery of this dispatcher's, or dead-lettered."""
        reason = f"status {status}" if status is not None else f"not run: {why}"
        if self.closing.is_set():
            self.queue.release(job)  # stays queued for the next run
            return
        if self._retry(job, reason):
            return
        pool = self.pool_of.get(job.function)
        if pool is not None:
            target = f"/{job.function}{job.path}" + (f"?{job.query}" if job.query else "")
            self._give_up(job, pool, target, reason)
        self.queue.dead_letter(job, reason)

    def given_up(self, job: Job, why: str) -> None:
        """The queue gave ``job`` up by itself (a server's ``max_deliver``): fail the request
        of a flow's iteration with ``why``, as after the dispatcher's own last attempt."""
        pool = self.pool_of.get(job.function)
        if pool is None:
            return
        target = f"/{job.function}{job.path}" + (f"?{job.query}" if job.query else "")
        self._give_up(job, pool, target, why)

    def _give_up(self, job: Job, pool: WorkerPool, target: str, why: str) -> None:
        """Tell a flow that its iteration is a dead letter, so the request fails with the
        cause instead of running until its deadline (the flow checks the message's signature
        as for any forward)."""
        if not _FORWARD.match(job.path):
            return
        headers = dict(job.headers)
        headers[ATTEMPT_HEADER] = str(job.attempts + 2)
        headers[DEAD_LETTER_HEADER] = (f"delivery given up after {job.attempts + 1} attempts "
                                       f"({why})")
        for attempt in range(3):  # another call's crash may have taken the worker down
            try:
                pool.call(job.method, target, headers, job.body)
                return
            except WorkerUnreachable as exc:
                if attempt == 2 or self.closing.wait(0.5):
                    log.warning("cannot fail the request of dead letter %s: %s", job.id, exc)
                    return

    def _retry(self, job: Job, why: str) -> bool:
        attempt = job.attempts + 1
        if attempt >= self.max_attempts:
            log.warning("dead letter: call %s to %s failed %d attempts (last: %s)",
                        job.id, job.function, attempt, why)
            return False
        delay = min(5.0, 0.1 * 2 ** job.attempts)
        log.warning("call %s to %s: attempt %d of %d: %s; trying again in %.1fs",
                    job.id, job.function, attempt, self.max_attempts, why, delay)
        self.queue.retry(job, delay)
        return True

    def _callback(self, job: Job, status: int, headers: list[tuple[str, str]], body: bytes,
                  duration: float) -> None:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        out = {k: v for k, v in headers if k.lower() not in HOP_BY_HOP}
        out.update({
            "X-Call-Id": job.id,
            "X-Function-Name": job.function,
            "X-Function-Status": str(status),
            "X-Duration-Seconds": f"{duration:.6f}",
        })
        assert job.callback is not None
        for attempt in range(3):
            try:
                reply = session.post(job.callback, data=body, headers=out, timeout=30)
            except requests.RequestException as exc:
                log.warning("callback of call %s to %s failed: %s", job.id, job.callback, exc)
            else:
                if reply.status_code < 500:
                    return
                log.warning("callback of call %s to %s answered %d", job.id, job.callback,
                            reply.status_code)
            if self.closing.wait(0.2 * 2 ** attempt):
                return
