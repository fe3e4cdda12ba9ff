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

from typing import Any, Dict, List, Optional, Sequence, Tuple

from .base import (
    Answer,
    Backend,
    CaptionError,
    FatalError,
    Request,
    Scrubber,
    api_key_from_env,
    check_answer,
)

OPENAI_HOST = 'api.openai.com'


def _is_openai(base_url: Optional[str]) -> bool:
    return not base_url or OPENAI_HOST in base_url


def make_client(base_url: Optional[str], api_key_env: str, timeout: float,
                max_retries: int) -> Tuple[Any, Scrubber, bool]:
    """``(AsyncOpenAI client, key scrubber, talks to OpenAI itself)``.

    The key comes from the environment only; a local server (vLLM,
    Ollama...) often needs none. The SDK does the retries and honours
    Retry-After.
    """
    import openai
    openai_params = _is_openai(base_url)
    key = api_key_from_env(api_key_env, required=openai_params)
    client = openai.AsyncOpenAI(api_key=key or 'no-key', base_url=base_url,
                                max_retries=max_retries, timeout=timeout)
    return client, Scrubber([key] if key else []), openai_params


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


def chat_body(model: str, req: Request, *, max_tokens: int,
              temperature: Optional[float], detail: str,
              system: Optional[str], openai_params: bool,
              extra_body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The JSON body of ``/v1/chat/completions`` (also a Batch API line)."""
    messages = [{'role': 'system', 'content': system}] if system else []
    messages.append(user_message(req.prompt, req.image, detail))
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


def parse_completion(data: Any, fallback_model: str) -> Answer:
    """An :class:`Answer` from a completion (SDK object or plain dict);
    raises :class:`CaptionError` for empty answers and refusals."""
    if not isinstance(data, dict):
        data = data.model_dump()
    choices = data.get('choices') or []
    if not choices:
        raise CaptionError('empty answer (no choices)')
    choice = choices[0]
    msg = choice.get('message') or {}
    text = check_answer(msg.get('content'), choice.get('finish_reason'),
                        msg.get('refusal'))
    usage = data.get('usage') or {}
    return Answer(text=text, model=data.get('model') or fallback_model,
                  usage={'prompt_tokens': usage.get('prompt_tokens') or 0,
                         'completion_tokens':
                         usage.get('completion_tokens') or 0},
                  truncated=choice.get('finish_reason') == 'length')


def error_message(e: Exception) -> str:
    """A short, useful description of an SDK error (status + server text)."""
    import openai
    if isinstance(e, openai.APIStatusError):
        body = e.body if isinstance(e.body, dict) else None
        msg = None
        if body:
            err = body.get('error', body)
            msg = err.get('message') if isinstance(err, dict) else err
        return f'HTTP {e.status_code}: {msg or e.message}'
    if isinstance(e, openai.APITimeoutError):
        return 'timeout'
    if isinstance(e, openai.APIConnectionError):
        return f'connection error: {e.__cause__ or e}'
    return f'{type(e).__name__}: {e}'


class OpenAIBackend(Backend):
    """Async chat completions, one image per request, ``concurrency`` in
    flight."""

    name = 'openai'

    def __init__(self, model: str, base_url: Optional[str] = None, *,
                 api_key_env: str = 'OPENAI_API_KEY', concurrency: int = 16,
                 max_tokens: int = 300, temperature: Optional[float] = None,
                 timeout: float = 120.0, max_retries: int = 5,
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
        self.client, self.scrub, self.openai_params = make_client(
            base_url, api_key_env, timeout, max_retries)

    def body(self, req: Request) -> Dict[str, Any]:
        return chat_body(self.model, req, max_tokens=self.max_tokens,
                         temperature=self.temperature, detail=self.detail,
                         system=self.system, openai_params=self.openai_params,
                         extra_body=self.extra_body)

    async def _one(self, req: Request) -> Any:
        import openai
        body = self.body(req)
        try:
            resp = await self.client.chat.completions.create(**body)
        except (openai.AuthenticationError, openai.PermissionDeniedError,
                openai.NotFoundError) as e:
            raise FatalError(self.scrub(
                f'{error_message(e)} -- check the API key, the model name '
                f'{self.model!r} and --base-url; stopping instead of failing '
                'every request')) from None
        except openai.APIStatusError as e:
            retried = e.status_code in (408, 409, 429) or e.status_code >= 500
            note = ' (after retries)' if retried else ''
            return CaptionError(self.scrub(error_message(e) + note))
        except openai.APIError as e:
            return CaptionError(self.scrub(error_message(e)
                                           + ' (after retries)'))
        try:
            return parse_completion(resp, self.model)
        except CaptionError as e:
            return CaptionError(self.scrub(e))

    async def generate(self, requests: Sequence[Request]) -> List[Any]:
        return [await self._one(r) for r in requests]

    async def aclose(self) -> None:
        await self.client.close()
