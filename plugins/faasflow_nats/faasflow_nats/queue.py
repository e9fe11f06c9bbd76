"""The gateway's queue of asynchronous calls on a NATS JetStream work-queue stream.

Every host's gateway publishes to one stream (a subject per function) and pulls from one durable
consumer, so any host delivers any call and a call held by a host that dies is delivered again
by another once ``ack_wait`` passes. The call id is the ``Nats-Msg-Id``: a call published twice
inside the duplicate window is stored once. A held call is acked only after the dispatcher is
done with it (the function answered and any callback went out); while it runs, a heartbeat
sends ``in_progress`` for it every third of ``ack_wait``, so ``ack_wait`` can stay short without
long calls being delivered twice.

Dead letters go to a second stream (``FAASFLOW_DEAD``): those the dispatcher gives up on, and
those the server gives up on after ``max_deliver`` deliveries (its MAX_DELIVERIES advisory, e.g.
the last delivery's host died), logged at WARNING with the call id and function.

The gateway is threaded and nats-py is asyncio: one event loop runs in a thread of its own and
the :class:`~faasflow.runtime.queues.Queue` methods wait on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import attrs
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from faasflow.errors import ConfigurationError
from faasflow.runtime.queue import CallIdInUse, Job
from faasflow_nats.messages import decode, encode, subject_token
from faasflow_nats.options import NatsOptions

__all__ = ["NatsQueue"]

log = logging.getLogger("faasflow.nats")

T = TypeVar("T")


class NatsQueue:
    """A :class:`~faasflow.runtime.queues.Queue` on JetStream; thread-safe."""

    path: Path | None = None
    recovered = 0

    def __init__(self, options: NatsOptions, max_attempts: int, *,
                 given_up: Callable[[Job, str], None] | None = None) -> None:
        self.options = options
        self.max_attempts = max(1, max_attempts)
        self.given_up = given_up
        """Told of every call the server gave up on (``max_deliver``), by one host."""
        self.dedup_hits = 0
        """Publishes the stream dropped as duplicates of a call id it holds."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="faasflow-nats")
        self._thread.start()
        self._stopped = threading.Event()
        self._closed = False
        self._take_lock = threading.Lock()
        self._held: dict[str, Msg] = {}
        self._held_lock = threading.Lock()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        try:
            self._run(self._start(), options.connect_timeout + 10)
        except BaseException:
            self.close()
            raise

    # -- the event loop ------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"NATS did not answer within {timeout:g}s") from None

    async def _start(self) -> None:
        o = self.options
        kwargs: dict[str, Any] = {}
        if o.user:
            kwargs["user"], kwargs["password"] = o.user, o.password
        if o.creds:
            kwargs["user_credentials"] = o.creds
        deadline = time.monotonic() + o.connect_timeout
        try:
            self._nc = await asyncio.wait_for(nats.connect(
                servers=list(o.servers), name="faasflow-gateway", connect_timeout=2,
                reconnect_time_wait=0.5, max_reconnect_attempts=-1, allow_reconnect=True,
                error_cb=self._on_error, **kwargs), o.connect_timeout)
        except Exception as exc:
            raise ConfigurationError(
                f"cannot reach NATS at {', '.join(o.servers)}: {exc or type(exc).__name__} "
                "(start nats-server -js there, or set FAASFLOW_NATS_SERVERS / NATS_URL / "
                "--queue nats://host:4222)") from exc
        self._js = self._nc.jetstream(timeout=5)
        while True:  # a cluster that is still electing its JetStream leader answers errors
            try:
                await self._declare()
                self._sub = await self._js.pull_subscribe_bind(o.consumer, o.stream)
                break
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"JetStream at {', '.join(o.servers)} is not ready after "
                        f"{o.connect_timeout:g}s: {exc} (is nats-server started with -js? "
                        "FAASFLOW_NATS_CONNECT_TIMEOUT waits longer)") from exc
                await asyncio.sleep(0.5)
        await self._nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{o.stream}.{o.consumer}",
            cb=self._on_max_deliveries)
        self._tasks.append(asyncio.ensure_future(self._heartbeat()))

    async def _declare(self) -> None:
        """Create the streams and the consumer; another host creating them at the same time,
        or before, is fine (an identical configuration is accepted again)."""
        o = self.options
        assert self._js is not None
        streams = (
            api.StreamConfig(
                name=o.stream, subjects=[f"{o.subject}.>"],
                retention=api.RetentionPolicy.WORK_QUEUE, storage=api.StorageType.FILE,
                duplicate_window=o.duplicate_window, num_replicas=o.replicas),
            api.StreamConfig(
                name=o.dead_stream, subjects=[f"{o.subject}-dead.>"],
                retention=api.RetentionPolicy.LIMITS, storage=api.StorageType.FILE,
                duplicate_window=o.duplicate_window, num_replicas=o.replicas),
        )
        for config in streams:
            try:
                await self._js.stream_info(str(config.name))
            except nats.js.errors.NotFoundError:
                try:
                    await self._js.add_stream(config)
                except nats.js.errors.BadRequestError as exc:
                    if "already in use" not in str(exc):
                        raise
        try:
            await self._js.consumer_info(o.stream, o.consumer)
        except nats.js.errors.NotFoundError:
            await self._js.add_consumer(o.stream, api.ConsumerConfig(
                durable_name=o.consumer, ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=o.ack_wait, max_deliver=self.max_attempts, max_ack_pending=10_000,
                filter_subject=f"{o.subject}.>"))

    async def _on_error(self, exc: Exception) -> None:
        if not self._closed:
            log.warning("NATS: %s", exc or type(exc).__name__)

    async def _heartbeat(self) -> None:
        """Tell the server every held call is still being worked on."""
        while True:
            await asyncio.sleep(max(0.2, self.options.ack_wait / 3))
            with self._held_lock:
                held = list(self._held.values())
            for msg in held:
                try:
                    await msg.in_progress()
                except Exception as exc:  # disconnected: the server redelivers, which is safe
                    log.debug("in-progress of %s failed: %s", msg.subject, exc)

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        """The server gave up on a call: keep it as a dead letter and take it off the work
        stream. Every host hears the advisory; the dead letter's id makes it one record."""
        assert self._js is not None
        try:
            event = json.loads(advisory.data)
            seq = int(event["stream_seq"])
            raw = await self._js.get_msg(self.options.stream, seq)
        except (ValueError, KeyError, nats.errors.Error) as exc:
            log.debug("max-deliveries advisory not handled: %s", exc)
            return
        deliveries = int(event.get("deliveries", 0))
        try:
            job, _ = decode(raw.data or b"", deliveries)
        except (ValueError, KeyError, TypeError):
            log.warning("dead letter: message %d of %s is not a faasflow call", seq,
                        self.options.stream)
            return
        log.warning("dead letter: call %s to %s was delivered %d times without an answer "
                    "(max_deliver)", job.id, job.function, deliveries)
        reason = f"no answer after {deliveries} deliveries"
        await self._keep_dead(job, reason)
        try:
            await self._js.delete_msg(self.options.stream, seq)
        except nats.errors.Error:
            return  # another host deleted it first, and tells its gateway
        if self.given_up is not None:
            # off the event loop: the gateway fails the request over HTTP to a worker
            threading.Thread(target=self._tell_given_up, args=(job, reason), daemon=True,
                             name="faasflow-nats-given-up").start()

    def _tell_given_up(self, job: Job, reason: str) -> None:
        assert self.given_up is not None
        try:
            self.given_up(job, f"the queue gave the call up: {reason} (max_deliver)")
        except Exception:  # the request still ends at its deadline
            log.exception("cannot fail the request of dead letter %s", job.id)

    async def _keep_dead(self, job: Job, reason: str) -> None:
        assert self._js is not None
        body = encode(job, reason=reason, attempts=job.attempts, at=time.time())
        await self._js.publish(
            f"{self.options.subject}-dead.{subject_token(job.function)}", body,
            stream=self.options.dead_stream, headers={"Nats-Msg-Id": f"dead-{job.id}"})

    # -- the Queue protocol --------------------------------------------------------------------

    def put(self, job: Job) -> bool:
        return self._run(self._put(job), self.options.publish_timeout + 10)

    async def _put(self, job: Job) -> bool:
        assert self._js is not None
        subject = f"{self.options.subject}.{subject_token(job.function)}"
        body = encode(job)
        end = time.monotonic() + self.options.publish_timeout
        while True:
            try:
                ack = await self._js.publish(subject, body, timeout=2.0,
                                             stream=self.options.stream,
                                             headers={"Nats-Msg-Id": job.id})
                break
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                # a stream electing a leader answers nothing for a few seconds; the same
                # Nats-Msg-Id makes the retry safe if the first publish was stored after all
                if time.monotonic() > end:
                    raise ConnectionError(f"JetStream did not store the call: {exc}") from exc
                await asyncio.sleep(0.25)
        if not ack.duplicate:
            return True
        self.dedup_hits += 1
        try:
            raw = await self._js.get_msg(self.options.stream, ack.seq)
            _, meta = decode(raw.data or b"")
        except (nats.errors.Error, ValueError, KeyError):
            return False  # delivered already: its digest is gone with it
        if meta.get("id") == job.id and meta.get("digest") != job.digest:
            raise CallIdInUse(job.id)
        return False

    def take(self, timeout: float | None = None) -> Job | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopped.is_set():
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                return None
            with self._take_lock:  # one pull request in flight: nats-py's fetch is not shared
                if self._stopped.is_set():
                    return None
                try:
                    msgs = self._run(self._fetch(wait), wait + 10)
                except (TimeoutError, asyncio.TimeoutError):
                    continue
                except nats.errors.Error as exc:
                    # an outage of several seconds is normal while a cluster fails over:
                    # never treat it as the end of the work
                    log.debug("fetch failed: %s", exc)
                    self._stopped.wait(0.2)
                    continue
            for msg in msgs:
                job = self._claim(msg)
                if job is not None:
                    return job
        return None

    async def _fetch(self, wait: float) -> list[Msg]:
        assert self._sub is not None
        try:
            return list(await self._sub.fetch(1, timeout=max(0.05, wait)))
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []

    def _claim(self, msg: Msg) -> Job | None:
        try:
            delivered = int(msg.metadata.num_delivered or 1)
            job, _ = decode(msg.data, delivered - 1)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("dropping message %s on %s: not a faasflow call (%s)",
                        msg.metadata.sequence.stream, msg.subject, exc)
            self._run(msg.term(), 10)
            return None
        with self._held_lock:
            self._held[job.id] = msg
        return job

    def _settle(self, job: Job) -> Msg | None:
        with self._held_lock:
            return self._held.pop(job.id, None)

    def done(self, job: Job) -> None:
        msg = self._settle(job)
        if msg is None or self._closed:
            return
        try:
            self._run(msg.ack_sync(timeout=5.0), 10)
        except Exception as exc:  # the server delivers it again; flows tell a redelivery
            log.warning("ack of call %s to %s failed (it will be delivered again): %s",
                        job.id, job.function, exc)

    def retry(self, job: Job, delay: float) -> Job:
        msg = self._settle(job)
        if msg is not None and not self._closed:
            self._quietly(msg.nak(delay=delay), job, "nak")
        return attrs.evolve(job, attempts=job.attempts + 1)

    def release(self, job: Job) -> None:
        msg = self._settle(job)
        if msg is not None and not self._closed:
            self._quietly(msg.nak(), job, "nak")

    def dead_letter(self, job: Job, reason: str) -> None:
        msg = self._settle(job)
        if self._closed:
            return
        try:
            self._run(self._keep_dead(attrs.evolve(job, attempts=job.attempts + 1), reason),
                      self.options.publish_timeout)
        except Exception as exc:
            log.warning("cannot keep dead letter %s: %s", job.id, exc)
        if msg is not None:
            self._quietly(msg.term(), job, "term")

    def _quietly(self, coro: Coroutine[Any, Any, None], job: Job, what: str) -> None:
        try:
            self._run(coro, 10)
        except Exception as exc:  # ack_wait brings the call back, which is what was asked
            log.warning("%s of call %s failed: %s", what, job.id, exc)

    def _messages(self, stream: str) -> int:
        if self._js is None or self._closed:
            return 0
        js = self._js

        async def count() -> int:
            info = await js.stream_info(stream)
            return int(info.state.messages)

        try:
            return self._run(count(), 5)
        except Exception:
            return 0

    def pending(self) -> int:
        return self._messages(self.options.stream)

    def dead(self) -> int:
        return self._messages(self.options.dead_stream)

    def held(self) -> int:
        """Calls this gateway holds (being delivered here)."""
        with self._held_lock:
            return len(self._held)

    def stop(self) -> None:
        self._stopped.set()

    def close(self) -> None:
        self._stopped.set()
        if self._closed:
            return
        with self._held_lock:
            held = list(self._held.values())
            self._held.clear()

        async def shut() -> None:
            for task in self._tasks:
                task.cancel()
            for msg in held:  # cut off by the stop: another host may take them at once
                try:
                    await msg.nak()
                except Exception:
                    break
            if self._nc is not None and not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await self._nc.flush(timeout=2)
                await self._nc.close()

        if self._loop.is_running():
            try:
                self._run(shut(), 10)
            except Exception as exc:
                log.debug("closing NATS: %s", exc)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
