"""An ``httpx.AsyncBaseTransport`` that applies bulkhead, per-host breaker and retry to
every request of an ``httpx.AsyncClient``::

    client = httpx.AsyncClient(transport=ResilientTransport(retry=RetryPolicy(budget=RetryBudget(0.1))))

Per attempt, in this order (see :mod:`.compose`): retry → breaker of the request's
origin (``scheme://host:port``) → bulkhead → the wrapped transport.

* Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) and requests
  carrying an ``Idempotency-Key`` header are retried; anything else gets one attempt.
* Retried: timeouts, network and protocol errors, statuses 408/429/502/503/504
  (``Retry-After`` honoured). Never: other 4xx, an open circuit, a full bulkhead.
  When retries run out the last response is returned as is (or the error raised).
* The breaker counts transport errors and statuses in ``failure_statuses``
  (500/502/503/504) as failures; the call duration is the time to response headers.
* The bulkhead slot is held until the response is closed (body read), chosen by
  ``request.extensions["edge_kv_tier"]`` when a :class:`TieredBulkhead` is given.
* A :class:`RetryPolicy` handed to the transport is not changed: the transport retries
  with a copy (:meth:`RetryPolicy.with_classifiers`) that has the HTTP classifiers in
  place of the default ones (custom ones are kept) and shares the policy's budget and
  ``metrics``; ``transport.retry`` is that copy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx

from edge_kv.core.backoff import NO_RETRY, RETRY, RetryVerdict, classify_status
from edge_kv.core.breaker import FAILURE, SUCCESS
from edge_kv.core.clock import SYSTEM_CLOCK, Clock
from edge_kv.origin.resilience.breaker import BreakerConfig, BreakerStore, CircuitBreaker, StateListener
from edge_kv.origin.resilience.bulkhead import Bulkhead, TieredBulkhead
from edge_kv.origin.resilience.retry_policy import RetryPolicy, default_classifier

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
FAILURE_STATUSES = frozenset({500, 502, 503, 504})
TIER_EXTENSION = "edge_kv_tier"


def http_exception_classifier(exc: BaseException, now: float) -> RetryVerdict:
    """Transient httpx errors are retried; everything else as :func:`default_classifier`."""
    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return RETRY
    return default_classifier(exc, now)


def http_response_classifier(response: Any, now: float) -> RetryVerdict:
    if not isinstance(response, httpx.Response):
        return NO_RETRY
    return classify_status(response.status_code, response.headers, now=now)


async def _close_response(response: Any) -> None:
    if isinstance(response, httpx.Response):
        await response.aclose()


class _ReleasingStream(httpx.AsyncByteStream):
    """Response body that frees its bulkhead slot when closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ResilientTransport(httpx.AsyncBaseTransport):
    """Wraps ``inner`` (default ``httpx.AsyncHTTPTransport()``)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        retry: RetryPolicy | None = None,
        breaker_config: BreakerConfig | None = None,
        breaker_store: BreakerStore | None = None,
        bulkhead: Bulkhead | TieredBulkhead | None = None,
        idempotent_methods: Iterable[str] = IDEMPOTENT_METHODS,
        failure_statuses: Iterable[int] = FAILURE_STATUSES,
        on_state_change: StateListener | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.clock = clock or SYSTEM_CLOCK
        # A copy with the HTTP classifiers: the caller's policy is left as it was given.
        self.retry = (retry if retry is not None else RetryPolicy(clock=self.clock)).with_classifiers(
            classify=http_exception_classifier,
            classify_result=http_response_classifier,
            discard_result=_close_response,
        )
        self.breaker_config = breaker_config or BreakerConfig()
        self.breaker_store = breaker_store
        self.bulkhead = bulkhead
        self.idempotent_methods = frozenset(m.upper() for m in idempotent_methods)
        self.failure_statuses = frozenset(failure_statuses)
        self.on_state_change = on_state_change
        self.breakers: dict[str, CircuitBreaker] = {}

    def breaker_for(self, url: httpx.URL) -> CircuitBreaker:
        """The breaker of ``url``'s origin, created on first use."""
        port = url.port or (443 if url.scheme == "https" else 80)
        origin = f"{url.scheme}://{url.host}:{port}"
        breaker = self.breakers.get(origin)
        if breaker is None:
            breaker = self.breakers[origin] = CircuitBreaker(
                origin,
                self.breaker_config,
                store=self.breaker_store,
                clock=self.clock,
                on_state_change=self.on_state_change,
            )
        return breaker

    def retryable(self, request: httpx.Request) -> bool:
        return request.method.upper() in self.idempotent_methods or "idempotency-key" in request.headers

    def _compartment(self, request: httpx.Request) -> Bulkhead | None:
        if isinstance(self.bulkhead, TieredBulkhead):
            tier = request.extensions.get(TIER_EXTENSION)
            return self.bulkhead(tier if isinstance(tier, str) else None)
        return self.bulkhead

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        breaker = self.breaker_for(request.url)
        compartment = self._compartment(request)

        async def attempt() -> httpx.Response:
            permit = await breaker.permit()
            start = self.clock.monotonic()
            try:
                if compartment is not None:
                    await compartment.acquire()
                try:
                    response = await self.inner.handle_async_request(request)
                except BaseException:
                    if compartment is not None:
                        compartment.release()
                    raise
            except BaseException as exc:
                await breaker.report(permit, breaker.classify(exc), self.clock.monotonic() - start)
                raise
            failed = response.status_code in self.failure_statuses
            await breaker.report(permit, FAILURE if failed else SUCCESS, self.clock.monotonic() - start)
            if compartment is None:
                return response
            assert isinstance(response.stream, httpx.AsyncByteStream)
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                stream=_ReleasingStream(response.stream, compartment.release),
                extensions=response.extensions,
                request=request,
            )

        if not self.retryable(request):
            return await attempt()
        await request.aread()  # a retried body must be replayable
        return await self.retry.call(attempt)

    async def aclose(self) -> None:
        await self.inner.aclose()
