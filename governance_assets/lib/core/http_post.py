"""POST a body over HTTP(S) with retries (the alert webhook's).

`post_within` sends through `requests`, retried by urllib3's `Retry` (exponential back-off as
urllib3 computes it, the server's Retry-After honoured up to a cap) and bounded in total time: no
attempt starts that could not finish within `total_seconds`.

Nothing here puts a URL, a header or a response body into a message: a failed POST comes back as
a `Failure` of neutral fields, and each caller words (and sanitises) its own error.
"""

from __future__ import annotations

import dataclasses
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Literal

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

MAX_RETRY_AFTER_SECONDS = 60.0
"""Upper bound on a server's Retry-After (seconds) that `post_within` will honour."""

UrlProblem = Literal["syntax", "scheme", "characters"]

_URL_PHRASES: dict[UrlProblem, str] = {
    "syntax": "is not a valid URL",
    "scheme": "is not an http(s) URL",
    "characters": "contains whitespace or control characters",
}


class InvalidURL(ValueError):
    """A URL that `http_url_parts` refuses; the message is a phrase (`is not a valid URL`…), never the URL."""

    def __init__(self, problem: UrlProblem) -> None:
        super().__init__(_URL_PHRASES[problem])
        self.problem: UrlProblem = problem
        """`syntax` (unparsable, bad port), `scheme` (not http(s), or no host), `characters`."""


def http_url_parts(url: str) -> urllib.parse.SplitResult:
    """`url` split, or InvalidURL unless it is an http(s) URL with a host, a valid port and no
    whitespace or control characters (callers strip it first)."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise InvalidURL("syntax") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidURL("scheme")
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise InvalidURL("characters")
    return parts


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds, capped; None when absent or an HTTP date."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


@dataclasses.dataclass(frozen=True)
class Failure:
    """How the last attempt of `post_within` failed."""

    problem: str
    """`HTTP <status>`, or the type name of the error (`ConnectionRefusedError`, `TimeoutError`…)."""
    attempts: int = 1
    """How many attempts were made."""
    retryable: bool = False
    """True if the failure looks transient (connection error, timeout, HTTP 429/5xx)."""
    status: int | None = None
    """The HTTP status, if the server answered."""
    strerror: str | None = None
    """The operating system's text for a connection error (`Connection refused`), if any."""
    response: str = ""
    """The start of the error response's body, decoded: it may echo the URL or a secret."""
    retry_after: float | None = None
    """The server's Retry-After in seconds (capped), if it gave one."""


RETRIED_STATUSES = frozenset({429, *range(500, 600)})
"""Answers worth another attempt: too many requests, server errors."""


class _BoundedRetry(Retry):
    """urllib3's Retry that counts the failed attempts, sleeps through an injectable `sleeper`,
    ignores a Retry-After it cannot read, and gives up when the next attempt (after its wait)
    could not finish before `deadline` (a `time.monotonic()` value)."""

    deadline: float = math.inf
    attempt_seconds: float = 0.0
    sleeper: Callable[[float], None] = staticmethod(time.sleep)
    failures: list[str]

    def new(self, **kw: Any) -> _BoundedRetry:
        retry = super().new(**kw)
        retry.deadline, retry.attempt_seconds, retry.sleeper = self.deadline, self.attempt_seconds, self.sleeper
        retry.failures = self.failures
        return retry

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        try:
            return super().get_retry_after(response)
        except InvalidHeader:
            return None

    def _wait(self, response: BaseHTTPResponse | None) -> float:
        after = self.get_retry_after(response) if response is not None and self.respect_retry_after_header else None
        return after if after else self.get_backoff_time()

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        wait = self._wait(response)
        if wait > 0:
            self.sleeper(wait)

    def increment(self, *args: Any, **kwargs: Any) -> _BoundedRetry:
        self.failures.append("failed")
        retry = super().increment(*args, **kwargs)
        response, error = kwargs.get("response"), kwargs.get("error")
        if time.monotonic() + retry._wait(response) + self.attempt_seconds > self.deadline:
            reason = error if isinstance(error, Exception) else ResponseError("no time left for another attempt")
            raise MaxRetryError(kwargs["_pool"], kwargs.get("url"), reason) from reason
        return retry


def _innermost(error: BaseException) -> BaseException:
    """The error at the bottom of a requests/urllib3 chain (its `reason`s and causes)."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, requests.RequestException) and error.args and isinstance(error.args[0], BaseException):
            error = error.args[0]
        elif isinstance(error, MaxRetryError) and error.reason is not None:
            error = error.reason
        elif error.__cause__ is not None:
            error = error.__cause__
        elif error.__context__ is not None and isinstance(error.__context__, OSError):
            error = error.__context__
    return error


def post_within(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_seconds: float,
    retries: int,
    backoff_seconds: float,
    total_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    response_bytes: int = 256,
) -> Failure | None:
    """POST `body` through `requests`; None once it is accepted, else the last attempt's Failure.

    Connection errors, timeouts and HTTP 429/5xx are retried up to `retries` times by urllib3's
    `Retry`: its back-off (`backoff_seconds` × 2^(n−1) before the n-th retry, none before the
    first), or the server's Retry-After instead (capped at `MAX_RETRY_AFTER_SECONDS`). Each attempt
    may take `timeout_seconds` to connect and as long to answer; no attempt starts that could not
    end within `total_seconds` of the call, so a hanging server costs at most about that long.
    Redirects are not followed (a 3xx is a final answer); other answers are final too."""
    retry = _BoundedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=0,
        allowed_methods=frozenset({"POST"}),
        status_forcelist=RETRIED_STATUSES,
        backoff_factor=backoff_seconds,
        backoff_max=MAX_RETRY_AFTER_SECONDS,
        retry_after_max=int(MAX_RETRY_AFTER_SECONDS),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    retry.deadline = time.monotonic() + total_seconds
    retry.attempt_seconds, retry.sleeper, retry.failures = timeout_seconds, sleep, []
    with requests.Session() as session:
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if time.monotonic() + timeout_seconds > retry.deadline:
            return Failure("TimeoutError", attempts=0, retryable=True)
        try:
            response = session.post(
                url,
                data=body,
                headers=dict(headers),
                timeout=(timeout_seconds, timeout_seconds),
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as error:
            cause = _innermost(error)
            kind = "TimeoutError" if isinstance(cause, TimeoutError | requests.Timeout) else type(cause).__name__
            strerror = cause.strerror if isinstance(cause, OSError) and cause.strerror else None
            return Failure(kind, attempts=max(len(retry.failures), 1), retryable=True, strerror=strerror)
        with response:
            status = response.status_code
            if status < 300:
                return None
            answer = next(response.iter_content(response_bytes), b"").decode("utf-8", "replace")
        counted = retry.is_retry("POST", status, "Retry-After" in response.headers)  # its failure is in `failures`
        attempts = len(retry.failures) + (0 if counted else 1)
        return Failure(
            f"HTTP {status}",
            attempts=max(attempts, 1),
            retryable=status in RETRIED_STATUSES,
            status=status,
            response=answer,
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
