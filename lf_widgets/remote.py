"""Samples from an OpenAI-compatible chat endpoint (a hosted API, vLLM, ``transformers serve`` …).

:class:`RemoteChatModel` has the same contract as :func:`lf_widgets.generation.sample_completions`:
it yields one list of :class:`~lf_widgets.generation.Completion` per batch of prompts, ``n`` per
prompt in prompt-major order, so the Session stores each batch atomically and an error in batch
``k`` leaves batches ``0 … k-1`` stored.

Only the standard library is used (``urllib.request`` and ``json``); there is no ``openai``
dependency. The API key is read from an environment variable at request time and is never kept
on the object, put into an exception message, or written anywhere the feedback log or an export
could pick it up.

Prompts are sent to the server as they are: a hosted endpoint sees everything the person types.
"""

from __future__ import annotations

import ipaddress
import json
import os
import http.client
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from .sampling import Completion, SamplingConfig

__all__ = ["RemoteChatModel", "RemoteModelError"]

_BODY_PREVIEW = 300  # characters of an error body quoted in a message
_MAX_BODY = 32 * 2 ** 20  # refuse answers larger than this (a chat completion is a few kB)
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}  # worth another try when max_retries > 0
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class RemoteModelError(RuntimeError):
    """A request to the remote endpoint failed; the message names the URL, never the key.

    ``status`` is the HTTP status when the server answered (else None) and ``url`` the endpoint.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class RemoteChatModel:
    """An OpenAI-compatible chat model behind ``POST {base_url}/chat/completions``.

    Parameters
    ----------
    base_url : str
        The API root, e.g. ``"https://api.openai.com/v1"`` or ``"http://127.0.0.1:8000/v1"``
        (``transformers serve``, vLLM, llama.cpp's server, Ollama's ``/v1`` …).
    model : str
        The model id the server expects in the request's ``"model"`` field.
    api_key_env : str or None
        Name of the environment variable holding the API key, read at every request and sent
        as ``Authorization: Bearer …``. When the variable is unset or empty (or ``None`` is
        passed) no Authorization header is sent, which is what local servers expect.
    timeout : float
        Seconds one request may take, from connecting to the end of the answer.
    max_retries : int
        Extra tries for transient failures (connection errors, timeouts, HTTP 408/409/429/5xx),
        with exponential backoff (0.5 s, 1 s, 2 s … capped at 8 s; ``Retry-After`` is honoured
        up to 30 s). Malformed answers and other HTTP errors are never retried.
    name : str, optional
        The provenance tag stored with every sample; default ``"remote:<model>"``.
    concurrency : int
        Requests in flight at once within a batch (each prompt is at least one request).
    extra_body : mapping, optional
        Extra fields merged into every chat request, for server-specific options, e.g.
        ``{"top_k": 50}`` (vLLM) or ``{"generation_config": '{"do_sample": true}'}``
        (``transformers serve``, see Notes). Do not put secrets here.

    Notes
    -----
    The server is asked for ``n`` choices per prompt with the ``n`` field. Servers that ignore
    it (``transformers serve`` 5.x answers with one choice) or reject it are detected on the
    first request; from then on each prompt costs ``n`` requests, the k-th with ``seed + k`` when
    a seed is given, so the samples differ but stay reproducible where the server honours seeds.

    ``transformers serve`` (5.x) only samples when the served model's ``generation_config`` has
    ``do_sample=True``; otherwise it decodes greedily whatever ``temperature`` says, and the
    ``n`` samples of a prompt come out identical. Pass
    ``extra_body={"generation_config": '{"do_sample": true}'}`` (or set ``"do_sample": true``
    in the folder's ``generation_config.json``). When every prompt of a batch gets ``n``
    identical samples although ``temperature > 0``, a ``RuntimeWarning`` says so, once.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 0, name: str | None = None,
                 concurrency: int = 4, extra_body: Mapping | None = None):
        if not isinstance(base_url, str) or not base_url.strip():
            raise ValueError("base_url must be a URL such as 'http://127.0.0.1:8000/v1'")
        parts = urllib.parse.urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must start with http:// or https:// and name a host, "
                             f"got {_display_url(base_url)!r}")
        if parts.username or parts.password:
            raise ValueError("base_url must not carry credentials; put the key in the "
                             "environment variable named by api_key_env")
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must be the model id the server expects, e.g. 'gpt-4o-mini'")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.base_url = base_url.strip().rstrip("/")
        self.model = model
        self.api_key_env = api_key_env  # the variable's NAME; its value is never stored
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.concurrency = int(concurrency)
        self.extra_body = dict(extra_body or {})
        self.tag = name or f"remote:{model}"
        self._supports_n: bool | None = None  # learnt from the first request with n > 1
        self._warned_greedy = False
        self._opener = _opener_for(parts.hostname)

    @property
    def endpoint(self) -> str:
        """``base_url`` without query or fragment: safe to store as provenance."""
        return _display_url(self.base_url)

    def __repr__(self) -> str:
        return (f"RemoteChatModel({self.base_url!r}, {self.model!r}, "
                f"api_key_env={self.api_key_env!r}, timeout={self.timeout})")

    # -- public --------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Cheap health check: ``GET {base_url}/models``; returns the model ids the server lists.

        Raises
        ------
        RemoteModelError
            When the server cannot be reached, answers with an error, or the answer is not a
            model list.
        """
        url = f"{self.base_url}/models"
        body = self._request("GET", url, None)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            shown = _display_url(url)
            raise RemoteModelError(
                f"malformed answer from {shown}: expected a JSON object with a 'data' list, "
                f"got {_preview(_redact(json.dumps(body), self.api_key_env))}", url=shown)
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]

    def complete(self, prompts: Sequence[str], n: int = 4,
                 config: SamplingConfig = SamplingConfig(), *, progress: bool = True,
                 ) -> Iterator[list[Completion]]:
        """Yield, batch by batch (``config.batch_size`` prompts), ``n`` completions per prompt.

        The same contract as :func:`~lf_widgets.generation.sample_completions`: prompt-major
        order, each batch complete before it is yielded, so a failure never yields half a batch
        and the batches yielded before it are the caller's to keep.
        ``Completion.token_ids`` is ``[]``: a remote server returns text, not the ids of its
        tokenizer (which may differ from any local one); training re-tokenises the text.

        Raises
        ------
        RemoteModelError
            On a connection error, timeout, HTTP error or malformed answer (after
            ``max_retries`` retries of the transient ones).
        """
        from tqdm.auto import tqdm

        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        prompts = list(prompts)
        batches = [prompts[i:i + config.batch_size]
                   for i in range(0, len(prompts), config.batch_size)]
        bar = tqdm(total=len(prompts) * n, desc=f"generating ({self.tag})", unit="sample",
                   disable=not progress, leave=False)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="lf-remote")
        try:
            for batch in batches:
                texts = self._batch(pool, batch, n, config)
                self._warn_if_greedy(texts, n, config)
                completions = [Completion(prompt=p, text=t, token_ids=[])
                               for p, ts in zip(batch, texts) for t in ts]
                bar.update(len(completions))
                yield completions
        finally:
            # Do not wait for requests still in flight (an interrupt or an error): they end by
            # their own timeout and their answers are dropped.
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()

    # -- batching --------------------------------------------------------------------------------
    def _batch(self, pool: ThreadPoolExecutor, batch: list[str], n: int,
               config: SamplingConfig) -> list[list[str]]:
        """``n`` texts for each prompt of ``batch``, in order; raises the first failure."""
        if n == 1 or self._supports_n is not False:
            # One request per prompt asking for n; _ask tops up when the server gives fewer.
            jobs = [(i, p, n, config.seed) for i, p in enumerate(batch)]
        else:  # the server ignores n: n independent requests per prompt, seeds kept distinct
            jobs = [(i, p, 1, None if config.seed is None else config.seed + k)
                    for i, p in enumerate(batch) for k in range(n)]
        futures = [pool.submit(self._ask, p, k, config, seed) for _, p, k, seed in jobs]
        texts: list[list[str]] = [[] for _ in batch]
        try:
            for (i, *_), fut in zip(jobs, futures):
                texts[i].extend(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        return texts

    def _warn_if_greedy(self, texts: list[list[str]], n: int, config: SamplingConfig) -> None:
        if self._warned_greedy or n < 2 or config.temperature == 0:
            return
        if all(len(set(ts)) == 1 for ts in texts):
            self._warned_greedy = True
            warnings.warn(
                f"{self.tag}: all {n} samples of every prompt are identical although "
                f"temperature={config.temperature:g}; the server seems to decode greedily. "
                "With `transformers serve`, pass extra_body={'generation_config': "
                "'{\"do_sample\": true}'} or set \"do_sample\": true in the model's "
                "generation_config.json.", RuntimeWarning, stacklevel=3)

    def _ask(self, prompt: str, n: int, config: SamplingConfig, seed: int | None) -> list[str]:
        """``n`` completions of one prompt: one request, then single top-ups if it gave fewer."""
        url = f"{self.base_url}/chat/completions"
        texts = self._chat(url, prompt, n, config, seed)
        if n > 1 and self._supports_n is None:
            self._supports_n = len(texts) >= n
        k = 1
        while len(texts) < n:  # the server ignored n (it answered with fewer choices)
            more_seed = None if seed is None else seed + k
            texts.extend(self._chat(url, prompt, 1, config, more_seed))
            k += 1
        return texts[:n]

    def _chat(self, url: str, prompt: str, n: int, config: SamplingConfig,
              seed: int | None) -> list[str]:
        payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                   "max_tokens": config.max_new_tokens, "temperature": config.temperature,
                   "top_p": config.top_p}
        if n > 1 and self._supports_n is not False:
            payload["n"] = n
        if seed is not None:
            payload["seed"] = seed
        payload.update(self.extra_body)
        try:
            body = self._request("POST", url, payload)
        except RemoteModelError as err:
            # A server that rejects the n field (400/422) gets one retry without it.
            if "n" in payload and err.status in (400, 422) and self._supports_n is not True:
                self._supports_n = False
                del payload["n"]
                body = self._request("POST", url, payload)
            else:
                raise
        return _parse_choices(body, url, self.api_key_env)

    # -- HTTP ------------------------------------------------------------------------------------
    def _request(self, method: str, url: str, payload: dict | None):
        """Send one request (with retries) and return the decoded JSON answer."""
        attempt = 0
        while True:
            try:
                return self._request_once(method, url, payload)
            except _Transient as t:
                transient = t
            if attempt >= self.max_retries:
                error = transient.error
                del transient
                raise error  # outside the except block: no chained context
            time.sleep(transient.retry_after if transient.retry_after is not None
                       else min(0.5 * 2 ** attempt, 8.0))
            attempt += 1

    def _request_once(self, method: str, url: str, payload: dict | None):
        shown = _display_url(url)
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        # The key goes straight into the Request (its repr shows no headers); no local name
        # holds it, so verbose tracebacks (%xmode Verbose) print no key.
        req = urllib.request.Request(url, data=data, method=method,
                                     headers=self._headers(data is not None))
        deadline = time.monotonic() + self.timeout
        error: RemoteModelError | _Transient | None = None
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status = resp.status
                raw = _read_until(resp, deadline)
        except urllib.error.HTTPError as e:
            status = e.code
            try:
                text = _redact(_read_until(e, time.monotonic() + min(self.timeout, 5.0))
                               .decode("utf-8", "replace"), self.api_key_env)
            except Exception:
                text = ""
            error = RemoteModelError(
                f"{shown} answered HTTP {status} {e.reason or ''}".rstrip()
                + f": {_error_message(text)}" + self._hint(status), url=shown, status=status)
            if status in _RETRY_STATUS:
                error = _Transient(error, _retry_after(e.headers))
        except _TooLarge:
            error = RemoteModelError(f"malformed answer from {shown}: larger than "
                                     f"{_MAX_BODY // 2 ** 20} MiB", url=shown)
        except _Timeout:
            error = _Transient(RemoteModelError(
                f"{shown} did not answer within the timeout of {self.timeout:g} s", url=shown))
        except (TimeoutError, socket.timeout):
            error = _Transient(RemoteModelError(
                f"{shown} did not answer within the timeout of {self.timeout:g} s", url=shown))
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                msg = f"{shown} did not answer within the timeout of {self.timeout:g} s"
            else:
                msg = (f"could not reach {_display_url(self.base_url)} — is the server running? "
                       f"({_reason(reason)})")
            error = _Transient(RemoteModelError(msg, url=shown))
        except (OSError, http.client.HTTPException) as e:  # reset or cut mid-answer …
            error = _Transient(RemoteModelError(
                f"the connection to {_display_url(self.base_url)} failed — is the server "
                f"running? ({_reason(e)})", url=shown))
        # Raised outside the except blocks, so no __context__ chains urllib's frames (whose
        # locals include the request headers) to the error; and the request (holding the key
        # in its headers) is dropped before anything is raised from this frame.
        del req
        if error is not None:
            raise error
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = _NotJSON
        if body is _NotJSON:
            text = _redact(raw.decode("utf-8", "replace"), self.api_key_env)
            raise RemoteModelError(f"malformed answer from {shown} (HTTP {status}): not JSON: "
                                   f"{_preview(text) if text.strip() else '(empty body)'}",
                                   url=shown, status=status)
        if isinstance(body, dict) and body.get("error") and "choices" not in body:
            raise RemoteModelError(f"{shown} answered with an error: "
                                   f"{_error_message(_redact(json.dumps(body), self.api_key_env))}",
                                   url=shown, status=status)
        return body

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "lf-widgets"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.api_key_env and os.environ.get(self.api_key_env):
            headers["Authorization"] = "Bearer " + os.environ[self.api_key_env].strip()
        return headers

    def _hint(self, status: int) -> str:
        if status == 404 and not self.base_url.endswith("/v1"):
            return " (OpenAI-compatible servers usually want a base_url ending in /v1)"
        if status not in (401, 403):
            return ""
        if not self.api_key_env:
            return " (no API key was sent: pass api_key_env=...)"
        if not os.environ.get(self.api_key_env):
            return f" (no API key was sent: ${self.api_key_env} is not set)"
        return f" (check the key in ${self.api_key_env})"


# -- helpers -------------------------------------------------------------------------------------
class _Transient(Exception):
    """Internal: a failure worth retrying; carries the error to raise when retries are spent."""

    def __init__(self, error: RemoteModelError, retry_after: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class _Timeout(Exception):
    """Internal: the whole answer did not arrive before the deadline."""


class _TooLarge(Exception):
    """Internal: the answer is larger than any chat completion should be."""


_NotJSON = object()


def _opener_for(host: str) -> urllib.request.OpenerDirector:
    """An opener that ignores $http_proxy for loopback hosts (a proxy cannot reach our own)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() in _LOOPBACK_NAMES
    if loopback:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _read_until(resp, deadline: float) -> bytes:
    """Read the whole answer, failing once ``deadline`` passes (a server trickling bytes)."""
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise _Timeout()
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > _MAX_BODY:
            raise _TooLarge()
        chunks.append(chunk)


def _parse_choices(body, url: str, key_env: str | None) -> list[str]:
    shown = _display_url(url)
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices:
        raise RemoteModelError(f"malformed answer from {shown}: no 'choices' list in "
                               f"{_preview(_redact(json.dumps(body), key_env))}", url=shown)
    if all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
    texts = []
    for c in choices:
        message = c.get("message") if isinstance(c, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content
                              if isinstance(p, dict) and p.get("type") in ("text", "output_text"))
        if not isinstance(content, str):
            refusal = message.get("refusal") if isinstance(message, dict) else None
            why = (f" (the model refused: {_preview(_redact(str(refusal), key_env))})"
                   if refusal else "")
            raise RemoteModelError(f"malformed answer from {shown}: a choice has no message "
                                   f"content{why}: {_preview(_redact(json.dumps(c), key_env))}",
                                   url=shown)
        texts.append(content.strip())
    return texts


def _display_url(url: str) -> str:
    """The URL without credentials, query or fragment (those can carry secrets)."""
    try:
        p = urllib.parse.urlsplit(url)
        host = p.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{p.port}" if p.port else "")
        return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "", ""))
    except ValueError:
        return "<invalid URL>"


def _redact(text: str, key_env: str | None = None) -> str:
    """Blank out the API key (and any other *KEY* / *TOKEN* variable's value) in quoted text.

    A server or proxy that echoes the request headers in an error body must not put the key
    into our exception message.
    """
    for name, value in os.environ.items():
        value = value.strip()
        if name == key_env:
            secret = bool(value)
        else:  # long values of variables that look like credentials (not TOKENIZERS_…=false)
            secret = len(value) >= 16 and any(w in name.upper() for w in ("KEY", "TOKEN", "SECRET"))
        if secret and value in text:
            text = text.replace(value, "***")
    return text


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


def _reason(reason) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return str(reason)


def _retry_after(headers) -> float | None:
    try:
        value = float(headers.get("Retry-After")) if headers is not None else None
    except (TypeError, ValueError):
        return None
    return None if value is None else min(max(value, 0.0), 30.0)
