"""``NatsBus``: the one owner of a nats-py connection. Everything else gets a bus
injected and never calls ``nats.connect`` itself (STYLE.md section 5)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from adapters.nats import subjects

log = logging.getLogger("shoal.nats")

Handler = Callable[[Msg], Awaitable[None]]


class BusError(RuntimeError):
    """The bus cannot do what was asked (not started, streams refused, ...)."""


class BusUnavailable(BusError):
    """No NATS server accepted the connection in time."""


class NoReply(BusError):
    """A request got no answer: nobody subscribes to the subject, or no reply in time."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"no reply on {subject}: {reason}")
        self.subject = subject
        self.reason = reason


@dataclass(frozen=True)
class StreamSpec:
    """The settings of a JetStream stream that ``ensure_streams`` enforces."""

    name: str
    subjects: tuple[str, ...]
    retention: RetentionPolicy
    duplicate_window: float  # seconds in which a repeated Nats-Msg-Id is dropped
    max_age: float = 0.0  # seconds a message is kept; 0: for ever

    def fields(self) -> dict[str, Any]:
        """The StreamConfig fields this spec decides (the rest keep server defaults)."""
        return {
            "subjects": list(self.subjects),
            "retention": self.retention,
            "storage": StorageType.FILE,
            "duplicate_window": self.duplicate_window,
            "max_age": self.max_age,
        }


REPORTS_KEPT_S = 7 * 24 * 3600.0

STREAMS = (
    # Instructions for polling agents wait here until their agent pulls and acks them.
    StreamSpec(subjects.WORK_STREAM, (subjects.WORK_SUBJECTS,), RetentionPolicy.WORK_QUEUE, 120.0),
    # Agents retry reports after a reconnect; the message id makes a retry harmless.
    # Reports are events within moments of arriving; they are kept a week (a server down
    # that long still finds them) rather than filling the disk for ever.
    StreamSpec(subjects.REPORTS_STREAM, (subjects.REPORTS_SUBJECTS,), RetentionPolicy.LIMITS,
               120.0, max_age=REPORTS_KEPT_S),
)


class NatsBus:
    """A NATS connection that reconnects forever, logs its state changes on the
    ``shoal.nats`` logger, keeps a registry of its subscriptions, and drains on stop.

    ``reconnect_wait`` is the pause between attempts on one server; ``connect_timeout``
    bounds the first connection in ``start()`` (later outages are retried without end)."""

    def __init__(self, *, reconnect_wait: float = 0.5, connect_timeout: float = 10.0) -> None:
        self._reconnect_wait = reconnect_wait
        self._connect_timeout = connect_timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._subs: list[Subscription] = []
        self._name = ""
        # Distinct errors since the last (re)connection, in order: each is logged as a
        # warning once (a server that is down fails every attempt the same way), and
        # start() names them when it gives up.
        self._seen_errors: dict[str, None] = {}
        self._stopping = False
        self._error_listeners: list[Callable[[Exception], None]] = []

    @property
    def is_connected(self) -> bool:
        """True while the connection is up (False while reconnecting or stopped)."""
        return self._nc is not None and self._nc.is_connected

    async def start(
        self,
        servers: str | Sequence[str],
        name: str,
        *,
        user: str | None = None,
        password: str | None = None,
        credentials_file: Path | None = None,
        inbox_prefix: str | None = None,
    ) -> None:
        """Connect to the first server of ``servers`` that answers. Raises BusUnavailable
        (with the last error, e.g. an authorization violation) after ``connect_timeout``."""
        if self._nc is not None:
            raise BusError("the bus is already started")
        urls = [servers] if isinstance(servers, str) else list(servers)
        options: dict[str, Any] = {
            "servers": urls,
            "name": name,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
            # nats-py applies this to the first connection too, where "forever" would hang
            # start() on a wrong password; so bounded here, and -1 once connected (below).
            "max_reconnect_attempts": max(1, math.ceil(self._connect_timeout / self._reconnect_wait)),
            # nats-py annotates these as int but sleeps with them, so fractions work.
            "reconnect_time_wait": self._reconnect_wait,
            "connect_timeout": min(2.0, self._connect_timeout),  # per attempt
        }
        if user is not None:
            options.update(user=user, password=password)
        if inbox_prefix is not None:
            # Agents may only subscribe below their own prefix (see subjects.inbox_prefix).
            options["inbox_prefix"] = inbox_prefix
        if credentials_file is not None:
            if importlib.util.find_spec("nkeys") is None:
                raise BusError("a NATS credentials file needs the 'nkeys' package, which is not installed")
            options["user_credentials"] = str(credentials_file)
        self._name, self._seen_errors = name, {}
        nc = Client()
        try:
            # The deadline; the attempt limit above still ends connect() if nats-py
            # swallows this cancellation (its _flush_pending and _close catch CancelledError).
            async with asyncio.timeout(self._connect_timeout):
                await nc.connect(**options)
        except (TimeoutError, nats.errors.NoServersError):
            await self._close(nc)
            raise BusUnavailable(
                f"could not connect to NATS at {', '.join(_safe_url(u) for u in urls)} within "
                # Every error seen: a refused password can also surface as a reset socket.
                f"{self._connect_timeout}s: {'; '.join(self._seen_errors) or 'no answer'}"
            ) from None
        except BaseException:
            await self._close(nc)
            raise
        nc.options["max_reconnect_attempts"] = -1  # agents and server outlive NATS restarts
        self._seen_errors.clear()
        self._nc, self._js = nc, nc.jetstream()
        log.info("nats connected", extra={"connection": name, "server": self._server()})

    async def stop(self, grace: float = 5.0) -> None:
        """Drain (in-flight handlers finish, pending publishes are flushed) for at most
        ``grace`` seconds, then close. Does nothing when not started."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is None:
            return
        self._subs.clear()
        self._stopping = True  # drain() closes the connection itself
        try:
            if nc.is_connected:
                # nats-py bounds its drain with this option; an outer cancellation would be
                # swallowed inside drain(), so the bound is passed in instead.
                nc.options["drain_timeout"] = grace
                await nc.drain()
        except nats.errors.Error as exc:
            log.warning("nats drain failed", extra={"connection": self._name, "error": repr(exc)})
        finally:
            await self._close(nc)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Core publish: at most once, buffered while reconnecting."""
        await self._client().publish(subject, payload, headers=headers)

    async def request(
        self, subject: str, payload: bytes, timeout: float, headers: dict[str, str] | None = None
    ) -> Msg:
        """Request/reply. Raises NoReply when nobody listens or nobody answers in time."""
        try:
            return await self._client().request(subject, payload, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise NoReply(subject, "no responders") from None
        except nats.errors.TimeoutError:
            raise NoReply(subject, f"no reply within {timeout}s") from None

    async def subscribe(self, subject: str, handler: Handler, queue: str | None = None) -> Subscription:
        """Call ``handler`` for each message, one at a time per subscription (a slow
        handler delays the next message). Returns once the server knows the interest, so
        a request sent right after reaches it. A handler's exception is logged with the
        subject and traceback; the subscription carries on."""
        nc = self._client()
        label = getattr(handler, "__qualname__", repr(handler))

        async def deliver(msg: Msg) -> None:
            try:
                await handler(msg)
            except Exception:
                log.exception("nats handler failed", extra={"subject": msg.subject, "handler": label})

        sub = await nc.subscribe(subject, queue=queue or "", cb=deliver)
        self._subs.append(sub)
        if nc.is_connected:
            try:
                await self.flush()
            except TimeoutError:  # the SUB is sent anyway; the caller only loses the guarantee
                log.warning("nats subscription not confirmed in time", extra={"subject": subject})
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """End one subscription from ``subscribe``."""
        if sub in self._subs:
            self._subs.remove(sub)
        await sub.unsubscribe()

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The live subscriptions made through this bus."""
        return tuple(self._subs)

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait until the server has processed everything sent so far (one round trip).
        Raises TimeoutError (nats-py's FlushTimeoutError is one) after ``timeout``."""
        nc = self._client()
        deadline = asyncio.get_running_loop().time() + timeout
        # nats-py writes flush()'s PING straight to the socket, ahead of commands still
        # queued for its flusher task, so its PONG could come back before the server saw
        # an earlier SUB or PUB (seen here under load). Let that queue empty first.
        async with asyncio.timeout_at(deadline):
            pause = 0.0
            while nc.pending_data_size and nc.is_connected:
                await asyncio.sleep(pause)
                pause = 0.001
        remaining = max(0.001, deadline - asyncio.get_running_loop().time())
        await nc.flush(timeout=remaining)  # type: ignore[arg-type]  # annotated int; a float works

    def jetstream(self) -> JetStreamContext:
        """The JetStream context of this connection."""
        if self._js is None:
            raise BusError("the bus is not started")
        return self._js

    async def ensure_streams(self, specs: Sequence[StreamSpec] = STREAMS) -> None:
        """Create the streams, or update those whose settings differ; safe to repeat."""
        js = self.jetstream()
        for spec in specs:
            wanted = spec.fields()
            try:
                current = (await js.stream_info(spec.name)).config
            except nats.js.errors.NotFoundError:
                await js.add_stream(StreamConfig(name=spec.name, **wanted))
                log.info("jetstream stream created", extra={"stream": spec.name})
                continue
            changed = {k: v for k, v in wanted.items() if getattr(current, k) != v}
            if not changed:
                continue
            try:
                await js.update_stream(current.evolve(**wanted))
            except nats.js.errors.APIError as exc:
                # e.g. retention cannot change to or from a work queue: needs an operator.
                raise BusError(f"stream {spec.name} cannot take {changed}: {exc.description}") from None
            log.info("jetstream stream updated", extra={"stream": spec.name, "changed": sorted(changed)})

    # -- JetStream: work queues and reports -----------------------------------------

    async def js_publish(
        self, subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None = None,
        timeout: float = 5.0,
    ) -> int:
        """Publish into a stream and wait for its acknowledgement; ``msg_id`` makes a
        repeat within the stream's duplicate window harmless. Returns the stream sequence.
        Raises BusError when the stream did not acknowledge in time."""
        try:
            ack = await self.jetstream().publish(
                subject, payload, timeout=timeout, headers={**(headers or {}), "Nats-Msg-Id": msg_id}
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise BusError(f"no acknowledgement from JetStream for {subject}: {exc!r}") from None
        except nats.js.errors.APIError as exc:
            raise BusError(f"JetStream refused a message on {subject}: {exc.description}") from None
        return int(ack.seq)

    async def ensure_pull_consumer(
        self, stream: str, durable: str, filter_subject: str, *, ack_wait: float = 30.0,
        max_ack_pending: int = 1000,
    ) -> None:
        """Create a durable pull consumer with explicit acks (kept if it exists). BusError
        when JetStream does not answer."""
        js = self.jetstream()
        try:
            try:
                await js.consumer_info(stream, durable)
                return
            except nats.js.errors.NotFoundError:
                pass
            await js.add_consumer(stream, ConsumerConfig(
                durable_name=durable, filter_subject=filter_subject, ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL, ack_wait=ack_wait,
                max_ack_pending=max_ack_pending, max_deliver=-1,
            ))
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(f"JetStream could not set up consumer {durable}: {exc!r}") from None
        log.info("jetstream consumer created", extra={"stream": stream, "consumer": durable})

    async def delete_consumer(self, stream: str, durable: str) -> None:
        """Remove a durable consumer; nothing happens when it does not exist."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.jetstream().delete_consumer(stream, durable)

    async def purge_subject(self, stream: str, subject: str) -> None:
        """Drop every message of one subject from a stream."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.jetstream().purge_stream(stream, subject=subject)

    async def delete_message(self, stream: str, seq: int) -> bool:
        """Remove one message (e.g. an instruction no longer wanted); False when it was
        already consumed or removed."""
        try:
            return bool(await self.jetstream().delete_msg(stream, seq))
        except nats.js.errors.NotFoundError:
            return False
        except nats.js.errors.APIError as exc:
            log.info("jetstream message not deleted",
                     extra={"stream": stream, "seq": seq, "error": exc.description})
            return False

    async def pull_subscription(
        self, stream: str, durable: str
    ) -> JetStreamContext.PullSubscription:
        """Bind to an existing durable pull consumer (deliveries come to this
        connection's own inbox prefix)."""
        nc = self._client()
        return await self.jetstream().pull_subscribe_bind(
            durable=durable, stream=stream, inbox_prefix=bytes(nc._inbox_prefix) + b"."
        )

    # -- internals ------------------------------------------------------------------

    async def _close(self, nc: Client) -> None:
        self._stopping = True  # the disconnect this causes is expected: no warning
        try:
            await nc.close()
        finally:
            self._stopping = False

    def _client(self) -> Client:
        if self._nc is None:
            raise BusError("the bus is not started")
        return self._nc

    def _server(self) -> str | None:
        url = self._nc.connected_url if self._nc is not None else None
        return f"{url.hostname}:{url.port}" if url is not None else None

    async def _on_error(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}".rstrip(": ")
        first = text not in self._seen_errors
        if first:
            if len(self._seen_errors) >= 50:  # e.g. permission errors naming many subjects
                self._seen_errors.clear()
            self._seen_errors[text] = None
        log.log(logging.WARNING if first else logging.DEBUG, "nats error",
                extra={"connection": self._name, "error": text})
        for listener in tuple(self._error_listeners):
            try:
                listener(exc)
            except Exception:
                log.exception("nats error listener failed", extra={"connection": self._name})

    def add_error_listener(self, listener: Callable[[Exception], None]) -> None:
        """Have ``listener`` called (synchronously, in the event loop) with every error the
        connection reports, e.g. an agent's own ``Authorization Violation`` once the server
        revoked its user; a listener that raises is logged and kept."""
        self._error_listeners.append(listener)

    async def _on_disconnected(self) -> None:
        level = logging.INFO if self._stopping else logging.WARNING  # expected when we close
        log.log(level, "nats disconnected", extra={"connection": self._name})

    async def _on_reconnected(self) -> None:
        self._seen_errors.clear()
        log.info("nats reconnected", extra={"connection": self._name, "server": self._server()})

    async def _on_closed(self) -> None:
        log.info("nats connection closed", extra={"connection": self._name})


def _safe_url(url: str) -> str:
    """``url`` without user:password, for messages."""
    return url.split("@", 1)[1] if "@" in url else url
