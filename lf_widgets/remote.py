"""Samples from an OpenAI-compatible chat endpoint (a hosted API, vLLM, ``transformers serve`` …).

:class:`RemoteChatModel` has the contract of a local model's ``complete``: it yields one list of
:class:`~lf_widgets.sampling.Completion` per batch of prompts (``n`` per prompt, prompt-major),
so the Session stores and shows each batch as it arrives. HTTP goes through one
:class:`httpx.Client` per model; no ``openai``, no torch. The API key is read from an environment
variable at every request and is never kept on the object, put into an exception message or its
traceback's locals, or logged. Prompts are sent as they are: a hosted endpoint sees them all.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.parse
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from ._http import (_MAX_BODY, _RETRY_STATUS, _Failure, _KeyFromEnv, _TooLarge, _check_url,
                    _display_url, _error_message, _is_loopback, _preview, _read_text,
                    _retry_after, _secret_values)
from .sampling import Completion, SamplingConfig, check_count, check_prompts

__all__ = ["RemoteChatModel", "RemoteModelError"]

_HTTP_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2",
                 "httpcore.proxy")


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
        (``transformers serve``, vLLM, llama.cpp's server, Ollama's ``/v1`` …). A query string
        is sent with every request; the values of its credential-like parameters (a name with
        key, token, secret, sig, auth or password in it) are never shown: ``repr``, messages
        and logs blank them, as they blank the key.
    model : str
        The model id the server expects in the request's ``"model"`` field.
    api_key_env : str or None
        Name of the environment variable holding the API key, read at every request and sent
        as ``Authorization: Bearer …``. When the variable is unset or empty (or ``None`` is
        passed) no Authorization header is sent, which is what local servers expect.
    timeout : float
        Seconds one request may take, from connecting to the end of the answer.
    max_retries : int
        Extra tries for failures where the request was not processed: the server could not be
        reached, or answered HTTP 408/409/429/5xx. They wait ``Retry-After`` when the server
        sends it (at most 30 s), else 0.5 s, 1 s, 2 s … capped at 8 s. A connection closed
        before any answer is first resent at once, uncounted (a kept-alive connection the server
        had just closed). A request that timed out or broke off mid-answer is not sent again
        (the server may still be generating it, and billing for it), nor are malformed answers
        or other HTTP errors.
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

    ``transformers serve`` (5.x) decodes greedily, whatever ``temperature`` says, unless the
    served model's ``generation_config`` has ``do_sample=True``: pass ``extra_body=
    {"generation_config": '{"do_sample": true}'}``. When every prompt of a batch gets ``n``
    identical samples although ``temperature > 0``, a ``RuntimeWarning`` says so, once.

    A connection to a loopback host never goes through ``$http_proxy`` (a proxy cannot reach
    our own machine); other hosts honour the proxy variables. :meth:`close` closes the
    kept-alive connections.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 0, name: str | None = None,
                 concurrency: int = 4, extra_body: Mapping | None = None):
        parts = _check_url(base_url)
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must be the model id the server expects, e.g. 'gpt-4o-mini'")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        # Without the query: that lives in the client only, so vars(self) cannot print it.
        self.base_url = _display_url(base_url.strip()).rstrip("/")
        self.model = model
        self.api_key_env = api_key_env  # the variable's NAME; its value is never stored
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.concurrency = int(concurrency)
        self.extra_body = dict(extra_body or {})
        self.tag = name or f"remote:{model}"
        self._supports_n: bool | None = None  # learnt from the first request with n > 1
        self._warned_greedy = False
        self._client = self._make_client(
            httpx.QueryParams(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))
        _LIVE.add(self)  # so httpx's log lines are redacted with this model's secrets too

    def _make_client(self, query: httpx.QueryParams) -> httpx.Client:
        # One client, shared by the request threads (httpx's Client is thread-safe), so they
        # reuse kept-alive connections. No HTTPTransport(retries=...): it retries connection
        # failures only, ignoring Retry-After; _request's one policy covers both.
        limits = httpx.Limits(max_connections=None,  # requests abandoned by an interrupt end
                              max_keepalive_connections=self.concurrency)  # by their timeout
        # A transport given explicitly turns off httpx's proxy variables: wanted for loopback.
        loopback = _is_loopback(urllib.parse.urlsplit(self.base_url).hostname)
        transport = httpx.HTTPTransport(limits=limits) if loopback else None
        return httpx.Client(
            base_url=self.base_url + "/", auth=_KeyFromEnv(self.api_key_env), params=query,
            headers={"Accept": "application/json", "User-Agent": "lf-widgets"},
            timeout=httpx.Timeout(self.timeout), limits=limits, transport=transport,
            follow_redirects=True)  # as urllib did; httpx drops the key on a cross-host hop

    @property
    def endpoint(self) -> str:
        """``base_url`` without query or fragment: safe to store as provenance."""
        return self.base_url

    def __repr__(self) -> str:
        query = self._redact(str(self._client.params))
        return (f"RemoteChatModel({self.base_url + ('?' + query if query else '')!r}, "
                f"{self.model!r}, api_key_env={self.api_key_env!r}, timeout={self.timeout:g})")

    def close(self) -> None:
        """Close the kept-alive connections (a later request opens new ones)."""
        self._client.close()
        self._client = self._make_client(self._client.params)

    # -- public --------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Cheap health check: ``GET {base_url}/models``; returns the model ids the server lists.

        Raises
        ------
        RemoteModelError
            When the server cannot be reached, answers with an error or not with a model list.
        """
        body = self._request("GET", "models")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise RemoteModelError(
                f"malformed answer from {self._shown('models')}: expected a JSON object with a "
                f"'data' list, got {_preview(json.dumps(body))}", url=self._shown("models"))
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]

    def complete(self, prompts: str | Sequence[str], n: int = 4,
                 config: SamplingConfig = SamplingConfig(), *, progress: bool = True,
                 ) -> Iterator[list[Completion]]:
        """Yield, batch by batch (``config.batch_size`` prompts), ``n`` completions per prompt.

        Each batch is complete before it is yielded: a failure never yields half a batch, and
        the batches before it are the caller's to keep. ``token_ids`` is ``[]`` (a server returns
        text, not its tokenizer's ids; training re-tokenises); ``truncated`` is True where the
        server says the answer was cut off at ``max_new_tokens`` (``finish_reason "length"``).

        Raises
        ------
        ValueError
            When ``prompts`` is not a non-empty list of non-empty strings or ``n`` not >= 1.
        RemoteModelError
            On a connection error, timeout, HTTP error or malformed answer (after
            ``max_retries`` retries where a retry makes sense).
        """
        from tqdm.auto import tqdm

        prompts, n = check_prompts(prompts), check_count(n)
        bar = tqdm(total=len(prompts) * n, desc=f"generating ({self.tag})", unit="sample",
                   disable=not progress, leave=False)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="lf-remote")
        try:
            for start in range(0, len(prompts), config.batch_size):
                batch = prompts[start:start + config.batch_size]
                answers = self._batch(pool, batch, n, config)
                self._warn_if_greedy([[text for text, _ in a] for a in answers], n, config)
                completions = [Completion(prompt=p, text=text, token_ids=[], truncated=cut)
                               for p, a in zip(batch, answers) for text, cut in a]
                bar.update(len(completions))
                yield completions
        finally:
            # Do not wait for requests still in flight (an interrupt or an error): they end by
            # their own timeout and their answers are dropped.
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()

    # -- batching --------------------------------------------------------------------------------
    def _batch(self, pool: ThreadPoolExecutor, batch: list[str], n: int,
               config: SamplingConfig) -> list[list[tuple[str, bool]]]:
        """``n`` (text, truncated) answers for each prompt of ``batch``, in order."""
        if n == 1 or self._supports_n is not False:
            # One request per prompt asking for n; _ask tops up when the server gives fewer.
            jobs = [(i, p, n, config.seed) for i, p in enumerate(batch)]
        else:  # the server ignores n: n independent requests per prompt, seeds kept distinct
            jobs = [(i, p, 1, None if config.seed is None else config.seed + k)
                    for i, p in enumerate(batch) for k in range(n)]
        futures = [pool.submit(self._ask, p, k, config, seed) for _, p, k, seed in jobs]
        answers: list[list[tuple[str, bool]]] = [[] for _ in batch]
        try:
            for (i, *_), fut in zip(jobs, futures):
                answers[i].extend(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        return answers

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

    def _ask(self, prompt: str, n: int, config: SamplingConfig,
             seed: int | None) -> list[tuple[str, bool]]:
        """``n`` answers to one prompt: one request, then single top-ups if it gave fewer."""
        answers = self._chat(prompt, n, config, seed)
        if n > 1 and self._supports_n is None:
            self._supports_n = len(answers) >= n
        k = 1
        while len(answers) < n:  # the server ignored n (it answered with fewer choices)
            answers.extend(self._chat(prompt, 1, config, None if seed is None else seed + k))
            k += 1
        return answers[:n]

    def _chat(self, prompt: str, n: int, config: SamplingConfig,
              seed: int | None) -> list[tuple[str, bool]]:
        from ._goal import goal_prompt  # the goal reads as local generation sends it

        content = goal_prompt(prompt, config.goal)
        payload = {"model": self.model, "messages": [{"role": "user", "content": content}],
                   "max_tokens": config.max_new_tokens, "temperature": config.temperature,
                   "top_p": config.top_p}
        if n > 1 and self._supports_n is not False:
            payload["n"] = n
        if seed is not None:
            payload["seed"] = seed
        payload.update(self.extra_body)
        try:
            body = self._request("POST", "chat/completions", payload)
        except RemoteModelError as err:
            # A server that rejects the n field (400/422) gets one more try without it.
            if "n" not in payload or err.status not in (400, 422) or self._supports_n is True:
                raise
            self._supports_n = False
            del payload["n"]
        else:
            return _parse_choices(body, self._shown("chat/completions"))
        # Outside the except block, so a second failure does not chain the first.
        return _parse_choices(self._request("POST", "chat/completions", payload),
                              self._shown("chat/completions"))

    # -- HTTP ------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, payload: dict | None = None):
        """The decoded, redacted JSON answer to one request, retried as the policy says.

        :meth:`_attempt` returns failures as values holding only a redacted message, raised here
        outside any ``except``: no frame of the traceback holds a raw body, and no httpx
        exception (whose frames hold the request headers) is chained to the error.
        """
        retries, resent = 0, False
        while True:
            outcome = self._attempt(method, path, payload)
            if not isinstance(outcome, _Failure):
                return outcome
            if outcome.resend and not resent:
                resent = True  # most likely a kept-alive connection the server had just closed
                continue
            if not outcome.retry or retries >= self.max_retries:
                raise outcome.error
            time.sleep(outcome.wait if outcome.wait is not None else min(0.5 * 2 ** retries, 8))
            retries += 1

    def _attempt(self, method: str, path: str, payload: dict | None):
        """One request: the decoded JSON answer, or a :class:`_Failure`; never raises."""
        deadline = time.monotonic() + self.timeout
        answered = False
        try:
            with self._client.stream(method, path, json=payload) as response:
                answered = True
                status, reason = response.status_code, response.reason_phrase
                wait = _retry_after(response.headers)
                text = self._redact(_read_text(response, deadline))
        except (httpx.HTTPError, _TooLarge) as e:
            return self._transport_failure(e, path, answered)
        return self._interpret(status, reason, text, wait, path)

    def _transport_failure(self, e: Exception, path: str, answered: bool) -> _Failure:
        shown, base, t = self._shown(path), self.base_url, self.timeout
        if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):  # nothing was sent
            return _Failure(RemoteModelError(
                f"could not reach {base} — is the server running? ({self._reason(e)})",
                url=shown), retry=True)
        dropped = isinstance(e, (httpx.NetworkError, httpx.RemoteProtocolError))
        if dropped and not answered:  # closed before any answer: most likely not processed
            return _Failure(RemoteModelError(
                f"the connection to {base} failed — is the server running? "
                f"({self._reason(e)})", url=shown), retry=True, resend=True)
        if isinstance(e, httpx.TimeoutException):
            msg = f"{shown} did not answer within the timeout of {t:g} s"
        elif isinstance(e, _TooLarge):
            msg = f"malformed answer from {shown}: larger than {_MAX_BODY // 2 ** 20} MiB"
        elif dropped:
            msg = (f"the answer from {shown} broke off — is the server still running? "
                   f"({self._reason(e)})")
        else:  # too many redirects, a proxy refusing, an undecodable gzip body …
            msg = f"the request to {shown} failed ({self._reason(e)})"
        return _Failure(RemoteModelError(msg, url=shown))

    def _interpret(self, status: int, reason: str, text: str, wait: float | None,
                   path: str):
        """The JSON body of a complete answer, or a :class:`_Failure` saying what is wrong."""
        shown = self._shown(path)
        if not 200 <= status < 300:
            msg = (f"{shown} answered HTTP {status} {reason}".rstrip()
                   + f": {_error_message(text)}" + self._hint(status))
            return _Failure(RemoteModelError(msg, url=shown, status=status),
                            retry=status in _RETRY_STATUS, wait=wait)
        try:
            # Decoded, then written plainly and redacted again: an escape such as \u002d in
            # the raw text would otherwise hide the key from the redaction above.
            body = json.loads(self._redact(json.dumps(json.loads(text), ensure_ascii=False)))
        except ValueError:
            msg = (f"malformed answer from {shown} (HTTP {status}): not JSON: "
                   f"{_preview(text) if text.strip() else '(empty body)'}")
            return _Failure(RemoteModelError(msg, url=shown, status=status))
        if isinstance(body, dict) and body.get("error") and "choices" not in body:
            msg = f"{shown} answered with an error: {_error_message(json.dumps(body))}"
            return _Failure(RemoteModelError(msg, url=shown, status=status))
        return body

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

    def _reason(self, e: Exception) -> str:
        text = str(e)
        if "refused" in text.lower():
            return "connection refused"
        if isinstance(e, httpx.ConnectTimeout):
            return f"no connection within the timeout of {self.timeout:g} s"
        return _preview(self._redact(f"{type(e).__name__}: {text}" if text else type(e).__name__))

    def _shown(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def _redact(self, text: str) -> str:
        """``text`` with the key, credential-like query values and env variables blanked out.

        A server or proxy that echoes the request (headers or URL) in its answer must not put
        the key into our exception messages, their tracebacks, the log or an export.
        """
        for value in _secret_values([self.api_key_env], self._client.params):
            if value and value in text:
                text = text.replace(value, "***")
        return text


# -- helpers -------------------------------------------------------------------------------------


def _redact_log_record(record: logging.LogRecord) -> bool:
    """Blank the live models' secrets in httpx's and httpcore's log records: httpx logs each
    request's full URL at INFO (with its query), httpcore the response headers at DEBUG."""
    try:
        message = original = record.getMessage()
        for model in list(_LIVE):
            message = model._redact(message)
    except Exception:  # unreadable, or the set of models changed meanwhile: drop, not leak
        return False
    if message != original:
        record.msg, record.args = message, ()
    return True


_LIVE: weakref.WeakSet[RemoteChatModel] = weakref.WeakSet()
for _name in _HTTP_LOGGERS:
    logging.getLogger(_name).addFilter(_redact_log_record)


def _parse_choices(body, shown: str) -> list[tuple[str, bool]]:
    """(text, truncated) of each choice, in index order; ``body`` is already redacted."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices:
        raise RemoteModelError(f"malformed answer from {shown}: no 'choices' list in "
                               f"{_preview(json.dumps(body))}", url=shown)
    if all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
    answers = []
    for c in choices:
        message = c.get("message") if isinstance(c, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content
                              if isinstance(p, dict) and p.get("type") in ("text", "output_text"))
        if not isinstance(content, str):
            refusal = message.get("refusal") if isinstance(message, dict) else None
            why = f" (the model refused: {_preview(str(refusal))})" if refusal else ""
            raise RemoteModelError(f"malformed answer from {shown}: a choice has no message "
                                   f"content{why}: {_preview(json.dumps(c))}", url=shown)
        answers.append((content.strip(), c.get("finish_reason") == "length"))
    return answers


