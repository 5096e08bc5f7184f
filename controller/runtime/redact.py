"""Redaction of credentials in anything pdscale shows: logs, decision reasons, the admin API's answers.

Two rules, applied to any JSON-like value:

- a string under a key that names a secret (``token``, ``password``, ``secret``, ``api_key``, ``authorization``,
  ``credentials``, ``cookie``...; not ``tokens`` or ``max_tokens``) becomes ``***``;
- inside any string, ``scheme://user:password@`` becomes ``scheme://***@``, ``Bearer <x>`` / ``Basic <x>``
  become ``Bearer ***``, and ``key=value`` / ``key: value`` pairs with a secret key have their value replaced.

Numbers and booleans are kept (a ``token: true`` flag says whether a token is set, not what it is). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["MASK", "is_secret_key", "redact", "redact_event", "redact_text"]

MASK = "***"
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "authorization",
        "credential",
        "credentials",
        "bearer",
        "cookie",
        "signature",
    }
)
_SECRET_SUFFIXES = ("apikey", "accesskey", "privatekey", "secretkey", "signingkey", "sessionkey")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_PAIR = re.compile(r"""(["']?)([A-Za-z_][\w.-]*)\1(\s*(?:=|:(?!//))\s*)(["']?)([^\s"'&,;?#}\]]+)""")


def is_secret_key(key: str) -> bool:
    """Whether a parameter or header named ``key`` holds a credential."""
    words = [w.lower() for w in _WORDS.findall(key)]
    joined = "".join(words)
    return joined == "key" or joined.endswith(_SECRET_SUFFIXES) or any(w in _SECRET_WORDS for w in words)


def _pair(m: re.Match[str]) -> str:
    if not is_secret_key(m.group(2)) or m.group(5) == MASK or m.group(5).lower() in ("bearer", "basic"):
        return m.group(0)
    return f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{m.group(4)}{MASK}"


def redact_text(text: str) -> str:
    """``text`` with URL credentials, authorization values and ``secret=value`` pairs masked."""
    if not text:
        return text
    text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    text = _AUTH_SCHEME.sub(rf"\1 {MASK}", text)
    return _PAIR.sub(_pair, text)


def redact(value: Any, key: str | None = None) -> Any:
    """A copy of a JSON-like ``value`` (found under ``key``) with every credential masked."""
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        return MASK if key is not None and is_secret_key(key) and value else redact_text(value)
    return value


def redact_event(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: every field of every log line through ``redact``."""
    for k, v in list(event_dict.items()):
        if isinstance(v, str | Mapping | list | tuple):
            event_dict[k] = redact(v, None if k == "event" else k)
    return event_dict
