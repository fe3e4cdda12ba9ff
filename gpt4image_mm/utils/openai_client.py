"""The one factory of OpenAI-SDK clients (caption, Batch API, embed), what a
server's error means, and the start-of-run model check.

Every client is built here so the key policy of :mod:`.security` holds for
all of them, with the same retry default. The SDK retries 408/409/429/5xx,
timeouts and dropped connections with backoff and honours ``Retry-After``;
on a timeout it closes the connection, so a server that watches its
sockets (llama.cpp, vLLM) stops generating the abandoned answer.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, List, Optional

from gpt4image_mm.utils.errors import EXIT_FIX_INPUT, EXIT_SERVER, ToolError
from gpt4image_mm.utils.security import (
    NO_KEY,
    Scrubber,
    api_key_for,
    is_openai,
    key_hint,
    resolve_endpoint,
)

logger = logging.getLogger(__name__)
DEFAULT_MAX_RETRIES = 5
DEFAULT_TIMEOUT = 120.0
# A request that has never once succeeded against this server gets few
# retries: a 500 such as "model must be created with embedding=True" will
# never succeed, and six backed-off retries only hide it for half a minute.
PREFLIGHT_RETRIES = 1
_REASON_CHARS = 300  # enough for any server's one-line reason


@dataclass
class Endpoint:
    """A client and what the error path needs to know about it."""

    client: Any
    url: str
    is_openai: bool
    api_key_env: Optional[str]
    scrub: Scrubber


class AnswerTooLarge(Exception):
    """A response body over the byte cap: read no further (not an
    ``httpx`` error, so the SDK does not retry it; the caller records it)."""


def make_client(base_url: Optional[str], api_key_env: Optional[str] = None,
                *, timeout: float = DEFAULT_TIMEOUT,
                max_retries: int = DEFAULT_MAX_RETRIES,
                asynchronous: bool = True, deadline: bool = False,
                max_response_bytes: Optional[int] = None) -> Endpoint:
    """A sync or async ``openai`` client for ``base_url`` (None: OpenAI),
    holding only the key :func:`~.security.api_key_for` allows.

    ``deadline`` (async only) makes ``timeout`` a limit on each whole
    attempt, connect to last byte: httpx's timeout bounds each read, so a
    server dripping one byte at a time would hold a request forever. An
    attempt past it is a timeout the SDK retries like any other.
    ``max_response_bytes`` (async only) stops reading a larger body with
    :class:`AnswerTooLarge`. Neither suits a Batch API file download.
    """
    import openai
    url = resolve_endpoint(base_url)
    key = api_key_for(url, api_key_env)
    cls = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    extra = {}
    if asynchronous and (deadline or max_response_bytes):
        extra['http_client'] = openai.DefaultAsyncHttpxClient(
            timeout=timeout, transport=BoundedTransport(
                timeout if deadline else None, max_response_bytes))
    # admin_api_key='' keeps the SDK from picking up OPENAI_ADMIN_KEY.
    client = cls(api_key=key or NO_KEY, admin_api_key='', base_url=url,
                 max_retries=max(0, int(max_retries)), timeout=timeout,
                 **extra)
    return Endpoint(client, url, is_openai(url), api_key_env,
                    Scrubber([key] if key else []))


def _bounded_transport_class() -> type:
    """:class:`BoundedTransport`, built on first use: ``httpx2`` is the
    SDK's, imported only where a client is made."""
    import anyio
    import httpx2
    from openai import DEFAULT_CONNECTION_LIMITS

    class _BoundedStream(httpx2.AsyncByteStream):
        def __init__(self, inner: Any, request: Any, end: Optional[float],
                     max_bytes: Optional[int]):
            self.inner, self.request = inner, request
            self.end, self.max_bytes = end, max_bytes

        async def __aiter__(self) -> AsyncIterator[bytes]:
            got, chunks = 0, self.inner.__aiter__()
            while True:
                chunk = await _within(self.end, chunks.__anext__(),
                                      self.request)
                if chunk is None:
                    return
                got += len(chunk)
                if self.max_bytes is not None and got > self.max_bytes:
                    raise AnswerTooLarge(
                        f'answer body over {self.max_bytes} bytes')
                yield chunk

        async def aclose(self) -> None:
            await self.inner.aclose()

    async def _within(end: Optional[float], step: Any, request: Any) -> Any:
        """``await step`` (None at the end of a stream) by ``end``."""
        try:
            if end is None:
                return await step
            with anyio.fail_after(max(0.0, end - time.monotonic())):
                return await step
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise httpx2.ReadTimeout('request deadline passed',
                                     request=request) from None

    class BoundedTransport(httpx2.AsyncBaseTransport):
        """A deadline per attempt and a cap on the body's bytes, around
        the SDK's own transport (see :func:`make_client`)."""

        def __init__(self, deadline_s: Optional[float],
                     max_bytes: Optional[int]):
            self.deadline_s, self.max_bytes = deadline_s, max_bytes
            self.inner = httpx2.AsyncHTTPTransport(
                limits=DEFAULT_CONNECTION_LIMITS)

        async def handle_async_request(self, request: Any) -> Any:
            end = (None if self.deadline_s is None
                   else time.monotonic() + self.deadline_s)
            resp = await _within(end, self.inner.handle_async_request(
                request), request)
            return httpx2.Response(
                resp.status_code, headers=resp.headers,
                stream=_BoundedStream(resp.stream, request, end,
                                      self.max_bytes),
                extensions=resp.extensions)

        async def aclose(self) -> None:
            await self.inner.aclose()

    return BoundedTransport


def BoundedTransport(deadline_s: Optional[float],  # noqa: N802 (a class)
                     max_bytes: Optional[int]) -> Any:
    """An ``httpx2`` transport that bounds each attempt's time and bytes."""
    global _BOUNDED
    if _BOUNDED is None:
        _BOUNDED = _bounded_transport_class()
    return _BOUNDED(deadline_s, max_bytes)


_BOUNDED: Optional[type] = None


def server_reason(e: BaseException) -> str:
    """The server's own words for an HTTP error, from the common shapes:
    OpenAI ``{"error": {"message"}}``, FastAPI ``{"detail": ...}`` (a string
    or a list of ``{"msg"}``), ``{"error": "..."}``, ``{"message"}``, or
    plain text."""
    body = getattr(e, 'body', None)
    reason = _reason_of(body)
    if not reason:
        response = getattr(e, 'response', None)
        try:
            reason = _reason_of(response.json()) if response is not None \
                else None
        except Exception:  # noqa: BLE001 - not JSON: use the text
            reason = (response.text or '').strip() if response is not None \
                else None
    reason = reason or getattr(e, 'message', None) or str(e)
    return ' '.join(str(reason).split())[:_REASON_CHARS]


def body_reason(body: Any) -> str:
    """The server's words in a decoded error body (one line, short)."""
    return ' '.join(str(_reason_of(body) or '').split())[:_REASON_CHARS]


def _reason_of(body: Any) -> Optional[str]:
    if isinstance(body, str):
        return body.strip() or None
    if isinstance(body, list):
        msgs = [_reason_of(x) for x in body]
        return '; '.join(m for m in msgs if m) or None
    if not isinstance(body, dict):
        return None
    for field in ('error', 'detail', 'message', 'msg'):
        if body.get(field):
            return _reason_of(body[field])
    return None


def api_error(e: BaseException, ep: Endpoint, model: str,
              what: str = 'request') -> ToolError:
    """One line (the server's reason and the fix) and an exit code for an
    SDK error that ends the run."""
    import openai
    if isinstance(e, openai.APIStatusError):
        code = e.status_code
        head = f'{ep.url} answered HTTP {code} to the {what}: ' \
               f'{server_reason(e)}'
        if code == 401:
            fix, rc = key_hint(ep.url, ep.api_key_env), EXIT_FIX_INPUT
        elif code == 403:
            fix, rc = (f'the key may not use model {model!r}; '
                       f'{key_hint(ep.url, ep.api_key_env)}'), EXIT_FIX_INPUT
        elif code == 404:
            fix, rc = (f'check --model {model!r} and that the URL ends in '
                       '/v1'), EXIT_FIX_INPUT
        elif code in (408, 409, 429) or code >= 500:
            fix, rc = ('the server keeps failing: check its log; rerun '
                       'the same command to resume'), EXIT_SERVER
        else:
            fix, rc = (f'the server rejects this request (model {model!r}); '
                       'check the options it supports'), EXIT_FIX_INPUT
        return ToolError(ep.scrub(f'{head} -- {fix}'), rc)
    if isinstance(e, openai.APITimeoutError):
        return ToolError(f'{ep.url} did not answer the {what} in time -- '
                         'check the server or raise --timeout; rerun to '
                         'resume', EXIT_SERVER)
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e
        return ToolError(ep.scrub(
            f'cannot reach {ep.url} ({type(cause).__name__}: {cause}) -- is '
            'the server running? rerun the same command to resume'),
            EXIT_SERVER)
    return ToolError(ep.scrub(f'{what} to {ep.url} failed: '
                              f'{type(e).__name__}: {e}'), EXIT_SERVER)


def served_models(ep: Endpoint) -> Optional[List[str]]:
    """The ids ``GET /models`` lists, or None when the server has no such
    listing (404/405/501). Other errors end the run through
    :func:`api_error` -- a bad key shows up here, before any work."""
    import openai
    client = ep.client.with_options(max_retries=PREFLIGHT_RETRIES)
    try:
        page = client.models.list()
        return [m.id for m in page.data]
    except openai.APIStatusError as e:
        if e.status_code in (404, 405, 501):
            return None
        raise api_error(e, ep, '', 'model listing') from None
    except openai.APIError as e:
        raise api_error(e, ep, '', 'model listing') from None


def check_model(ep: Endpoint, model: str) -> None:
    """Refuse a model the server does not list (a server that echoes any
    name would otherwise record the wrong one); warn when it lists none.

    ``ep`` must hold a synchronous client."""
    ids = served_models(ep)
    if not ids:
        logger.warning('warning: %s lists no models; cannot check --model '
                       '%r', ep.url, model)
        return
    # Ollama serves "llava" as "llava:latest"
    if model in ids or f'{model}:latest' in ids:
        return
    shown = ', '.join(sorted(ids)[:10]) + (' ...' if len(ids) > 10 else '')
    raise ToolError(f'{ep.url} does not serve model {model!r}; it lists: '
                    f'{shown} -- pass one of them as --model',
                    EXIT_FIX_INPUT)


def check_served_model(base_url: Optional[str], api_key_env: Optional[str],
                       model: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """:func:`check_model` with a short-lived synchronous client."""
    ep = make_client(base_url, api_key_env, timeout=timeout,
                     asynchronous=False)
    try:
        check_model(ep, model)
    finally:
        ep.client.close()
