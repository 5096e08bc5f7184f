"""Credential redaction: URL userinfo, authorization values, secret-named fields; counts and flags kept."""

from __future__ import annotations

import pytest

from pdscale.controller.runtime.redact import is_secret_key, redact, redact_event, redact_text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:pa55w0rd@prom:9090/api", "http://***@prom:9090/api"),
        ("GET https://tok3n@hooks.example/x failed", "GET https://***@hooks.example/x failed"),
        ("http://prom:9090/q?token=abc123&step=1", "http://prom:9090/q?token=***&step=1"),
        ("authorization: Bearer s3cret-token", "authorization: Bearer ***"),
        ('{"password": "hunter2", "n": 3}', '{"password": "***", "n": 3}'),
        ("api_key: zzz9 max_tokens=4096", "api_key: *** max_tokens=4096"),
        ("the bearer token is not valid", "the bearer token is not valid"),
    ],
)
def test_text(text: str, shown: str) -> None:
    """Credentials inside free text are masked; ordinary words and counts stay."""
    assert redact_text(text) == shown


@pytest.mark.parametrize("key", ["token", "password", "apiKey", "AWS_SECRET_ACCESS_KEY", "client_secret", "Cookie"])
def test_secret_keys(key: str) -> None:
    """Names of credentials are recognised in snake, camel and upper case."""
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["max_tokens", "kv_tokens_per_replica", "tokenizer", "monkey", "keys", "url"])
def test_ordinary_keys(key: str) -> None:
    """Token counts and other ordinary names are not taken for credentials."""
    assert not is_secret_key(key)


def test_nested_params() -> None:
    """Nested params: secret-named strings masked, URLs cleaned, numbers and flags kept."""
    params = {
        "url": "http://u:p@hook/",
        "headers": {"Authorization": "Bearer abcdefgh12"},
        "auth": [{"password": "x"}],
        "max_tokens": 5,
        "token_set": True,
    }
    assert redact(params) == {
        "url": "http://***@hook/",
        "headers": {"Authorization": "***"},
        "auth": [{"password": "***"}],
        "max_tokens": 5,
        "token_set": True,
    }


def test_log_event() -> None:
    """The structlog processor masks fields and the event text alike."""
    event = {"event": "call http://a:b@h/ failed", "token": "t0k", "params": {"secret": "s"}, "token_set": True}
    assert redact_event(None, "info", event) == {
        "event": "call http://***@h/ failed",
        "token": "***",
        "params": {"secret": "***"},
        "token_set": True,
    }
