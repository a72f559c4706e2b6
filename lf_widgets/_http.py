"""HTTP plumbing of the remote source (``remote.py``): URL checks, reading an answer with a
deadline, Retry-After, the key as an ``httpx.Auth``, and the text helpers of error messages.
The domain logic (what a chat completion means, hints, redaction of live keys) stays there."""

from __future__ import annotations

import ipaddress
import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

_BODY_PREVIEW = 300  # characters of an error body quoted in a message
_MAX_BODY = 32 * 2 ** 20  # refuse answers larger than this (a chat completion is a few kB)
_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})  # busy or briefly broken
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "SIG", "AUTH")  # in a variable's name


@dataclass
class _Failure:
    """Internal: a failed request, as a value; ``error`` is what to raise when giving up."""

    error: Exception  # the RemoteModelError to raise when giving up
    retry: bool = False  # worth another try after a backoff (counts against max_retries)
    wait: float | None = None  # the server's Retry-After, in seconds
    resend: bool = False  # worth one immediate resend, not counted


class _TooLarge(Exception):
    """Internal: the answer is larger than any chat completion should be."""


class _KeyFromEnv(httpx.Auth):
    """``Authorization: Bearer $VAR``, read as each request is sent: a key exported later is
    used at once, and no object of ours holds it, only the request being sent."""

    def __init__(self, env: str | None):
        self.env = env

    def auth_flow(self, request: httpx.Request):
        if self.env and os.environ.get(self.env, "").strip():
            request.headers["Authorization"] = "Bearer " + os.environ[self.env].strip()
        yield request


def _check_url(base_url) -> urllib.parse.SplitResult:
    if not isinstance(base_url, str) or not base_url.strip():
        raise ValueError("base_url must be a URL such as 'http://127.0.0.1:8000/v1'")
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must start with http:// or https:// and name a host, "
                         f"got {_display_url(base_url)!r}")
    if parts.username or parts.password:
        raise ValueError("base_url must not carry credentials; put the key in the "
                         "environment variable named by api_key_env")
    return parts


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in _LOOPBACK_NAMES


def _read_text(response: httpx.Response, deadline: float) -> str:
    """The whole answer as text, failing once ``deadline`` passes (a server trickling bytes)."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > _MAX_BODY:
            raise _TooLarge()
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the whole answer did not arrive in time")
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")  # JSON is UTF-8 (RFC 8259)


def _display_url(url: str) -> str:
    """The URL without credentials, query or fragment (those can carry secrets)."""
    p = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((p.scheme, p.netloc.rpartition("@")[2], p.path, "", ""))


def _secret_values(key_envs, query: httpx.QueryParams) -> Iterator[str]:
    """The strings never to show: the key variables' values, and the values of credential-like
    query parameters (also URL-encoded) and environment variables (long ones: not
    ``TOKENIZERS_PARALLELISM=false``). Only these: answers are redacted too, and must keep
    an ordinary ``2024-06-01`` that an ``api-version`` parameter happens to hold."""
    def secret(name: str) -> bool:
        return any(w in name.upper() for w in _SECRET_WORDS)

    for name, value in os.environ.items():
        if name in key_envs or (len(value.strip()) >= 16 and secret(name)):
            yield value.strip()
    for name, value in query.multi_items():
        if len(value) >= 4 and secret(name):  # shorter ones would blank ordinary words
            yield value
            yield urllib.parse.quote(value, safe="")


def _error_message(text: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body."""
    try:
        err = json.loads(text).get("error")
        if isinstance(err, dict) and err.get("message"):
            return _preview(str(err["message"]))
        if isinstance(err, str) and err:
            return _preview(err)
    except (ValueError, AttributeError):
        pass
    return _preview(text) if text.strip() else "(empty body)"


def _preview(value) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= _BODY_PREVIEW else text[:_BODY_PREVIEW] + " …"


def _retry_after(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds, at most 30 s; None when absent or an HTTP date (the
    backoff applies then: hosted APIs send seconds)."""
    try:
        return min(max(float(headers["Retry-After"]), 0.0), 30.0)
    except (KeyError, ValueError):
        return None
