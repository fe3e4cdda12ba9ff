"""Where an API key may be sent, and the one scrubber that keeps keys out of
every message, record and traceback (DESIGN.md, "Rules").

The policy, in one place for caption, the Batch API and embed:

* ``OPENAI_API_KEY`` goes only to OpenAI's own API (``https://api.openai.com``);
* any other endpoint gets a key only from a variable named explicitly with
  ``--api-key-env VAR`` -- a local vLLM or llama.cpp server never sees the
  OpenAI key by accident;
* a key never travels over plain ``http://`` except to a loopback address
  (127.0.0.0/8, ::1, localhost), where nothing leaves the machine.
"""
from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Optional, Sequence, Set
from urllib.parse import urlsplit

from gpt4image_mm.utils.errors import InputError

OPENAI_HOST = 'api.openai.com'
OPENAI_API_URL = f'https://{OPENAI_HOST}/v1'
DEFAULT_KEY_ENV = 'OPENAI_API_KEY'
# The openai SDK refuses to build a client without some key; this
# placeholder is what a keyless endpoint receives. It is not a secret.
NO_KEY = 'no-key'

_SECRET_LIKE = re.compile(r'\b(sk-[A-Za-z0-9_\-]{6,})')
_BEARER = re.compile(r'(Bearer\s+)(?!\*\*\*)[^\s\'",}]+', re.IGNORECASE)
# Shorter values are too likely to be ordinary words to replace blindly.
_MIN_SECRET_LEN = 4
_registered: Set[str] = set()


class CredentialError(InputError):
    """A key is missing, or the policy forbids sending it to this endpoint."""


def register_secret(value: Optional[str]) -> None:
    """Make every :class:`Scrubber` in the process remove ``value``."""
    if value and len(value) >= _MIN_SECRET_LEN:
        _registered.add(value)


class Scrubber:
    """Removes secrets from any text that leaves the process: the keys it
    was given, every key read through :func:`api_key_for`, the value of
    ``OPENAI_API_KEY``, ``Bearer`` tokens and anything shaped like an
    OpenAI key."""

    def __init__(self, secrets: Sequence[str] = ()):
        self.secrets = [s for s in secrets if s and len(s) >= _MIN_SECRET_LEN]

    def __call__(self, text: Any) -> str:
        text = str(text)
        env_key = os.environ.get(DEFAULT_KEY_ENV)
        known = set(self.secrets) | _registered | ({env_key} if env_key and len(
            env_key) >= _MIN_SECRET_LEN else set())
        for s in sorted(known, key=len, reverse=True):
            text = text.replace(s, '***')
        text = _BEARER.sub(r'\1***', text)
        return _SECRET_LIKE.sub('sk-***', text)


scrub = Scrubber()  # the process-wide instance


def resolve_endpoint(base_url: Optional[str]) -> str:
    """The URL requests really go to (the SDK would fall back to
    ``OPENAI_BASE_URL``, then to OpenAI; we decide it here, visibly)."""
    return (base_url or os.environ.get('OPENAI_BASE_URL')
            or OPENAI_API_URL).rstrip('/')


def is_openai(url: str) -> bool:
    """OpenAI's own API: https and exactly its host (not a look-alike such
    as ``api.openai.com.example.org``)."""
    parts = urlsplit(url)
    return parts.scheme == 'https' and parts.hostname == OPENAI_HOST


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ''
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key_for(url: str, api_key_env: Optional[str]) -> Optional[str]:
    """The key ``url`` may receive under the policy above, or None.

    ``api_key_env`` is the variable named with ``--api-key-env`` (None when
    not given). Raises :class:`CredentialError` when a needed key is missing
    or the policy forbids sending it.
    """
    openai_itself = is_openai(url)
    env = api_key_env or (DEFAULT_KEY_ENV if openai_itself else None)
    if env is None:
        return None  # another endpoint, no variable named: no key
    key = os.environ.get(env)
    if not key:
        raise CredentialError(
            f'no API key: the environment variable {env} is not set'
            + ('' if api_key_env else ' (or name another with --api-key-env)'))
    register_secret(key)
    if urlsplit(url).scheme != 'https' and not is_loopback(url):
        raise CredentialError(
            f'refusing to send the key from {env} over plain '
            f'{urlsplit(url).scheme or "?"}:// to {urlsplit(url).hostname}; '
            'use an https:// URL (or a loopback address)')
    return key


def key_hint(url: str, api_key_env: Optional[str]) -> str:
    """What to do when ``url`` refuses our credentials (for error lines)."""
    if is_openai(url):
        env = api_key_env or DEFAULT_KEY_ENV
        return f'check the key in {env}'
    if api_key_env:
        return f'check the key in {api_key_env} for {url}'
    return (f'{url} wants a key: put it in a variable and pass '
            f'--api-key-env VAR ({DEFAULT_KEY_ENV} is sent only to '
            f'{OPENAI_HOST})')
