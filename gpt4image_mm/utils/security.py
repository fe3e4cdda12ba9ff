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
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Set
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


def _maybe_token(text: str) -> bool:
    """Whether ``text`` may hold a bearer token or an OpenAI-shaped key."""
    return 'sk-' in text or 'bearer' in text.lower()


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
        self._stamp: Any = None
        self._cache: List[str] = []

    def __call__(self, text: Any) -> str:
        text = str(text)
        for s in self._known():
            if s in text:
                text = text.replace(s, '***')
        if not _maybe_token(text):  # the common case: nothing to replace
            return text
        text = _BEARER.sub(r'\1***', text)
        return _SECRET_LIKE.sub('sk-***', text)

    def finds(self, text: str) -> bool:
        """Whether ``text`` (plain, or JSON holding the strings) may hold
        something this scrubber replaces: a quick test before the work."""
        return _maybe_token(text) or any(
            s in text or json.dumps(s, ensure_ascii=False)[1:-1] in text
            for s in self._known())

    def _known(self) -> List[str]:
        """The secrets to replace, longest first (cached: this runs on
        every field of every record written)."""
        env_key = os.environ.get(DEFAULT_KEY_ENV)
        stamp = (len(_registered), env_key)
        if stamp != self._stamp:
            known = set(self.secrets) | _registered | (
                {env_key} if env_key and len(env_key) >= _MIN_SECRET_LEN
                else set())
            self._cache = sorted(known, key=len, reverse=True)
            self._stamp = stamp
        return self._cache


scrub = Scrubber()  # the process-wide instance


def scrub_record(record: Dict[str, Any],
                 scrubber: Optional[Scrubber] = None) -> Dict[str, Any]:
    """``record`` with every string in it scrubbed (nested values too), but
    its ``key``: a key names the user's own file and is the join identity
    of every later stage, never something a server sent. A server may echo
    the key it was given inside a successful answer (its text, its model
    name): this keeps it out of the descriptions file."""
    clean = scrubber or scrub
    return {k: v if k == 'key' else _scrubbed(v, clean)
            for k, v in record.items()}


def _scrubbed(value: Any, clean: Scrubber) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v, clean) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, clean) for v in value]
    return value


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
