"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, Ollama, LM
Studio, ``transformers serve``) through the ``openai`` SDK.

Retries are the SDK's own: it retries 408/409/429/5xx, timeouts and dropped
connections with exponential backoff and honours ``Retry-After`` (up to two
minutes); it does not retry other 4xx. On top of that we decide what a final
error means: a bad key, a missing permission or an unknown model would fail
for every image, so they stop the run (:class:`FatalError`) with a clear
message; other errors are recorded for this image and retried on a rerun.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from gpt4image_mm.captioning.base import (
    Answer,
    Backend,
    CaptionError,
    CaptionOptions,
    FatalError,
    Request,
    check_answer,
)
from gpt4image_mm.captioning.registry import CAPTION_BACKENDS
from gpt4image_mm.captioning.sources import Plan
from gpt4image_mm.utils.openai_client import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    AnswerTooLarge,
    api_error,
    body_reason,
    check_served_model,
    server_reason,
)
from gpt4image_mm.utils.openai_client import make_client as make_endpoint
from gpt4image_mm.utils.security import Scrubber


def add_endpoint_arguments(group: Any) -> None:
    """The options of an OpenAI-compatible endpoint, shared by the online
    and the Batch API backends (declared once, whichever comes first)."""
    group.add_argument('--base-url', help='OpenAI-compatible endpoint, e.g. '
                       'http://localhost:8000/v1 (vLLM)')
    group.add_argument('--api-key-env', default=None, metavar='VAR',
                       help='environment variable holding the key for '
                       '--base-url (default: OPENAI_API_KEY, sent only to '
                       'api.openai.com; other endpoints get no key)')
    group.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT,
                       help='seconds per API request, connect to last byte '
                       '(each retry gets its own)')
    group.add_argument('--max-retries', type=int,
                       default=DEFAULT_MAX_RETRIES,
                       help='API retries per request (rate limits, 5xx)')


def make_client(base_url: Optional[str], api_key_env: Optional[str],
                timeout: float, max_retries: int) -> Tuple[Any, Scrubber, bool]:
    """``(AsyncOpenAI client, key scrubber, talks to OpenAI itself)`` from
    the one client factory (:mod:`gpt4image_mm.utils.openai_client`), which
    applies the key policy."""
    ep = make_endpoint(base_url, api_key_env, timeout=timeout,
                       max_retries=max_retries)
    return ep.client, ep.scrub, ep.is_openai


def user_message(prompt: str, image_url: Optional[str],
                 detail: str = 'auto') -> Dict[str, Any]:
    """The chat message of one request: the prompt, then the image (if any)
    as a data URL -- only pixels and the prompt leave the machine."""
    if image_url is None:
        return {'role': 'user', 'content': prompt}
    image: Dict[str, Any] = {'url': image_url}
    if detail != 'auto':
        image['detail'] = detail
    return {'role': 'user', 'content': [
        {'type': 'text', 'text': prompt},
        {'type': 'image_url', 'image_url': image}]}


def chat_messages(prompt: str, image_url: Optional[str],
                  system: Optional[str] = None,
                  detail: str = 'auto') -> List[Dict[str, Any]]:
    """The messages of one request (also what its token estimate counts)."""
    messages = [{'role': 'system', 'content': system}] if system else []
    messages.append(user_message(prompt, image_url, detail))
    return messages


def chat_body(model: str, req: Request, *, max_tokens: int,
              temperature: Optional[float], detail: str,
              system: Optional[str], openai_params: bool,
              extra_body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The JSON body of ``/v1/chat/completions`` (also a Batch API line)."""
    messages = chat_messages(req.prompt, req.image, system, detail)
    body: Dict[str, Any] = {'model': model, 'messages': messages}
    # OpenAI's newer models only accept max_completion_tokens; many
    # self-hosted servers only know max_tokens.
    body['max_completion_tokens' if openai_params else 'max_tokens'] = \
        max_tokens
    if temperature is not None:
        body['temperature'] = temperature
    if extra_body:
        body.update(extra_body)
    return body


# The most bytes read of one chat answer: a description at the longest the
# descriptions file takes (MAX_TEXT_CHARS) is ~1.2 MB of JSON even with every
# character \u-escaped; a larger body is a misbehaving server.
MAX_ANSWER_BYTES = 4 << 20


def parse_completion(data: Any, fallback_model: str) -> Answer:
    """An :class:`Answer` from a completion (SDK object or decoded JSON);
    raises :class:`CaptionError` for empty, refused or malformed answers
    (a server is hostile: any shape may come back)."""
    if hasattr(data, 'model_dump'):
        data = data.model_dump()
    if not isinstance(data, dict):
        raise CaptionError(f'malformed answer: a JSON {type(data).__name__}'
                           ', not an object')
    choices = data.get('choices')
    if not choices and data.get('error'):
        raise CaptionError('server error in a 200 answer: '
                           f'{body_reason(data)}')
    if not choices:
        raise CaptionError('empty answer (no choices)')
    choice = choices[0] if isinstance(choices, list) else None
    if not isinstance(choice, dict) or not isinstance(
            choice.get('message') or {}, dict):
        raise CaptionError('malformed answer: choices[0] holds no message')
    msg = choice.get('message') or {}
    finish = choice.get('finish_reason')
    finish = finish if isinstance(finish, str) else None
    refusal = msg.get('refusal')
    text = check_answer(message_text(msg.get('content')), finish,
                        refusal if isinstance(refusal, str) else None)
    usage = data.get('usage') if isinstance(data.get('usage'), dict) else {}
    model = data.get('model')
    return Answer(text=text,
                  model=model if isinstance(model, str) and model
                  else fallback_model,
                  usage={k: _count(usage.get(k)) for k in
                         ('prompt_tokens', 'completion_tokens')},
                  truncated=finish == 'length')


def message_text(content: Any) -> Optional[str]:
    """A message's text: a string, or the text parts of a list of content
    parts (some servers answer so); anything else is a malformed answer."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict)
                                         for p in content):
        return ''.join(p['text'] for p in content
                       if isinstance(p.get('text'), str))
    raise CaptionError(f'malformed answer: content is a JSON '
                       f'{type(content).__name__}, not text')


def _count(v: Any) -> int:
    """A token count from a server: a non-negative int, else 0."""
    return int(v) if isinstance(v, (int, float)) and v >= 0 else 0


def decode_body(raw: bytes) -> Any:
    """The JSON of a 200 answer, or :class:`CaptionError` quoting its
    start (an HTML error page, a truncated body)."""
    try:
        return json.loads(raw)
    except ValueError:
        head = raw[:80].decode('utf-8', 'backslashreplace')
        raise CaptionError('malformed answer: not JSON '
                           f'({" ".join(head.split())!r})') from None


def error_message(e: Exception) -> str:
    """A short, useful description of an SDK error (status + the server's
    reason, whatever shape its error body has)."""
    import openai
    if isinstance(e, openai.APIStatusError):
        return f'HTTP {e.status_code}: {server_reason(e)}'
    if isinstance(e, openai.APITimeoutError):
        return 'timeout'
    if isinstance(e, openai.APIConnectionError):
        return f'connection error: {e.__cause__ or e}'
    return f'{type(e).__name__}: {e}'


def endpoint_kwargs(options: CaptionOptions) -> Dict[str, Any]:
    """What both OpenAI backends are built from, once the server is known
    to serve ``--model`` (checked first: a wrong name fails every
    request)."""
    a = options.backend_args
    check_served_model(a.base_url, a.api_key_env, options.model, a.timeout)
    return dict(base_url=a.base_url, api_key_env=a.api_key_env,
                max_retries=a.max_retries, max_tokens=options.max_tokens,
                temperature=options.temperature, detail=options.detail,
                system=options.system)


@CAPTION_BACKENDS.register_module('openai')
class OpenAIBackend(Backend):
    """Async chat completions, one image per request, ``concurrency`` in
    flight."""

    name = 'openai'
    help = 'any OpenAI-compatible server (OpenAI, vLLM, SGLang, Ollama...)'

    @classmethod
    def add_arguments(cls, group: Any) -> None:
        add_endpoint_arguments(group)
        group.add_argument('--concurrency', type=int, default=16,
                           help='API requests in flight at once')

    @classmethod
    def from_options(cls, options: CaptionOptions,
                     plan: Plan) -> OpenAIBackend:
        a = options.backend_args
        return cls(options.model, **endpoint_kwargs(options),
                   concurrency=a.concurrency, timeout=a.timeout)

    def __init__(self, model: str, base_url: Optional[str] = None, *,
                 api_key_env: Optional[str] = None, concurrency: int = 16,
                 max_tokens: int = 300, temperature: Optional[float] = None,
                 timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES,
                 detail: str = 'auto', system: Optional[str] = None,
                 extra_body: Optional[Dict[str, Any]] = None):

        self.model = model
        self.base_url = base_url
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.detail = detail
        self.system = system
        self.extra_body = extra_body
        self.max_retries = max_retries
        self.endpoint = make_endpoint(base_url, api_key_env, timeout=timeout,
                                      max_retries=max_retries, deadline=True,
                                      max_response_bytes=MAX_ANSWER_BYTES)
        self.client = self.endpoint.client
        self.scrub = self.endpoint.scrub
        self.openai_params = self.endpoint.is_openai

    def body(self, req: Request) -> Dict[str, Any]:
        return chat_body(self.model, req, max_tokens=self.max_tokens,
                         temperature=self.temperature, detail=self.detail,
                         system=self.system, openai_params=self.openai_params,
                         extra_body=self.extra_body)

    async def _one(self, req: Request) -> Any:
        import openai
        body = self.body(req)
        try:
            resp = await self.client.chat.completions.with_raw_response \
                .create(**body)
        except AnswerTooLarge as e:
            return CaptionError(str(e))
        except (openai.AuthenticationError, openai.PermissionDeniedError,
                openai.NotFoundError) as e:
            raise FatalError(str(api_error(e, self.endpoint, self.model))
                             + '; stopping instead of failing every '
                             'request') from None
        except openai.APIError as e:
            retried = self.max_retries > 0 and (
                not isinstance(e, openai.APIStatusError)
                or e.status_code in (408, 409, 429) or e.status_code >= 500)
            note = ' (after retries)' if retried else ''
            return CaptionError(self.scrub(error_message(e) + note))
        try:
            return parse_completion(decode_body(resp.http_response.content),
                                    self.model)
        except CaptionError as e:
            return CaptionError(self.scrub(e))

    async def generate(self, requests: Sequence[Request]) -> List[Any]:
        return [await self._one(r) for r in requests]

    async def aclose(self) -> None:
        await self.client.close()
