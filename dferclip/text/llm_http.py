"""The HTTP side of LLM requests: one total deadline per call, cancellable waits, a bounded reply, no redirects.

The openai client's timeout is per read: a server that sends a byte every few seconds never times out. Here the
client gets a transport (:func:`http_client`) whose sockets read in short slices and check, between slices, the
limits of the call in progress (:func:`call_limits`): its deadline, its cancel flag and the reply bytes
received so far. A stopped call records why (``CallLimits.stopped``) so the caller can say so plainly.

Redirects are not followed (a public server could answer 307 to an address inside the app's network). With
``public_only`` (a visitor's own server on a public app) every connection is checked when it is made: the host
must resolve to public addresses only, and the socket connects to the checked address (no DNS rebinding).
"""
from __future__ import annotations

import ipaddress
import math
import socket
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Optional

import httpcore2
import httpx2

READ_SLICE_S = 0.25  # how often a waiting read looks at the deadline and the cancel flag
MAX_RESPONSE_BYTES = 1 << 20  # one reply, headers included


@dataclass
class CallLimits:
    deadline: float = math.inf  # time.monotonic() by which the call must be over
    cancel: Optional[threading.Event] = None
    max_bytes: int = MAX_RESPONSE_BYTES
    received: int = 0
    stopped: Optional[str] = None  # "deadline" | "cancelled" | "too-large" | "private-address"

    def left(self) -> float:
        return self.deadline - time.monotonic()


_CALL: ContextVar[Optional[CallLimits]] = ContextVar("dferclip_llm_call", default=None)


@contextmanager
def call_limits(seconds: float, cancel: Optional[threading.Event] = None) -> Iterator[CallLimits]:
    """The limits of the requests made inside the ``with`` block (in this thread): ``seconds`` in all."""
    limits = CallLimits(deadline=time.monotonic() + seconds, cancel=cancel)
    token = _CALL.set(limits)
    try:
        yield limits
    finally:
        _CALL.reset(token)


def _limits() -> CallLimits:
    return _CALL.get() or CallLimits()


def _stop(limits: CallLimits, reason: str, error: type) -> Exception:
    limits.stopped = limits.stopped or reason
    return error(reason)


def _time_for(limits: CallLimits, timeout: Optional[float], error: type) -> float:
    """The seconds an operation may take now: at most ``timeout`` and what is left of the call."""
    if limits.cancel is not None and limits.cancel.is_set():
        raise _stop(limits, "cancelled", httpcore2.ReadError)
    left = limits.left()
    if left <= 0:
        raise _stop(limits, "deadline", error)
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore2.NetworkStream):
    def __init__(self, inner: httpcore2.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        limits = _limits()
        end = time.monotonic() + _time_for(limits, timeout, httpcore2.ReadTimeout)
        while True:
            wait = min(READ_SLICE_S, end - time.monotonic())
            if wait <= 0:
                if limits.left() <= 0:
                    limits.stopped = limits.stopped or "deadline"
                raise httpcore2.ReadTimeout("no data in time")
            try:
                data = self._inner.read(max_bytes, timeout=wait)
            except httpcore2.ReadTimeout:
                _time_for(limits, None, httpcore2.ReadTimeout)  # raises once cancelled or past the deadline
                continue
            limits.received += len(data)
            if limits.received > limits.max_bytes:
                raise _stop(limits, "too-large", httpcore2.ReadError)
            return data

    def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        self._inner.write(buffer, timeout=_time_for(_limits(), timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname: Optional[str] = None,
                  timeout: Optional[float] = None) -> httpcore2.NetworkStream:
        wait = _time_for(_limits(), timeout, httpcore2.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname=server_hostname, timeout=wait))

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


def public_address(host: str, port: int) -> Optional[str]:
    """The first address ``host`` resolves to, or None when any of its addresses is not public."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    addresses = [info[4][0].split("%")[0] for info in infos]
    if not addresses or not all(ipaddress.ip_address(a).is_global for a in addresses):
        return None
    return addresses[0]


class _Backend(httpcore2.NetworkBackend):
    def __init__(self, public_only: bool):
        self._inner = httpcore2.SyncBackend()
        self._public_only = public_only

    def connect_tcp(self, host: str, port: int, timeout: Optional[float] = None, local_address=None,
                    socket_options=None) -> httpcore2.NetworkStream:
        limits = _limits()
        wait = _time_for(limits, timeout, httpcore2.ConnectTimeout)
        if self._public_only:
            try:
                checked = public_address(host, port)
            except (OSError, UnicodeError):
                raise httpcore2.ConnectError(f"cannot resolve {host}") from None
            if checked is None:
                raise _stop(limits, "private-address", httpcore2.ConnectError)
            host = checked
        return _Stream(self._inner.connect_tcp(host, port, timeout=wait, local_address=local_address,
                                               socket_options=socket_options))

    def connect_unix_socket(self, path: str, timeout: Optional[float] = None, socket_options=None):
        raise httpcore2.ConnectError("unix sockets are not used for LLM servers")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_ERRORS = (  # httpcore2's errors as httpx2's (the openai client tells timeouts from other failures by them)
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout), (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout), (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.ConnectError, httpx2.ConnectError), (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError), (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
)


@contextmanager
def _httpx_errors():
    try:
        yield
    except Exception as e:
        for core, mapped in _ERRORS:
            if isinstance(e, core):
                raise mapped(str(e)) from e
        if isinstance(e, (httpcore2.NetworkError, httpcore2.ProtocolError, httpcore2.TimeoutException)):
            raise httpx2.TransportError(str(e)) from e
        raise


class _Body(httpx2.SyncByteStream):
    def __init__(self, stream):
        self._stream = stream

    def __iter__(self):
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        if hasattr(self._stream, "close"):
            self._stream.close()


class LimitedTransport(httpx2.BaseTransport):
    """An HTTP/1.1 transport whose connections obey the call's limits (and, ``public_only``, reach public
    addresses only)."""

    def __init__(self, public_only: bool = False):
        self._pool = httpcore2.ConnectionPool(ssl_context=httpx2.create_ssl_context(), max_connections=4,
                                              network_backend=_Backend(public_only))

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        core = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                              target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        with _httpx_errors():
            response = self._pool.handle_request(core)
        return httpx2.Response(status_code=response.status, headers=response.headers, stream=_Body(response.stream),
                               extensions=response.extensions)

    def close(self) -> None:
        self._pool.close()


def http_client(timeout: float, public_only: bool = False) -> httpx2.Client:
    """The client the openai client sends through: no redirects, no proxies from the environment."""
    return httpx2.Client(transport=LimitedTransport(public_only), follow_redirects=False, timeout=timeout,
                         trust_env=False)
