"""The one factory of OpenAI-SDK clients (caption, Batch API, embed), what a
server's error means, and the start-of-run model check.

Every client is built here so the key policy of :mod:`.security` holds for
all of them, with the same retry default. The SDK retries 408/409/429/5xx,
timeouts and dropped connections with backoff and honours ``Retry-After``;
on a timeout it closes the connection, so a server that watches its
sockets (llama.cpp, vLLM) stops generating the abandoned answer.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, List, Optional

from .cli_errors import EXIT_FIX_INPUT, EXIT_SERVER, ToolError
from .security import (
    NO_KEY,
    Scrubber,
    api_key_for,
    is_openai,
    key_hint,
    resolve_endpoint,
)

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


def make_client(base_url: Optional[str], api_key_env: Optional[str] = None,
                *, timeout: float = DEFAULT_TIMEOUT,
                max_retries: int = DEFAULT_MAX_RETRIES,
                asynchronous: bool = True) -> Endpoint:
    """A sync or async ``openai`` client for ``base_url`` (None: OpenAI),
    holding only the key :func:`~.security.api_key_for` allows."""
    import openai
    url = resolve_endpoint(base_url)
    key = api_key_for(url, api_key_env)
    cls = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    # admin_api_key='' keeps the SDK from picking up OPENAI_ADMIN_KEY.
    client = cls(api_key=key or NO_KEY, admin_api_key='', base_url=url,
                 max_retries=max(0, int(max_retries)), timeout=timeout)
    return Endpoint(client, url, is_openai(url), api_key_env,
                    Scrubber([key] if key else []))


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
        print(f'warning: {ep.url} lists no models; cannot check --model '
              f'{model!r}', file=sys.stderr, flush=True)
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
