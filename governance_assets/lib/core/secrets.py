"""Keeping secrets out of every message: URLs with credentials, token query values, and the
values of the environment variables that hold secrets.

`redact(text)` is applied to any text that may quote a URL or a variable before it reaches a
log, Dagster's event log, metadata, MLflow or a report; `redacting_errors(obj)` wraps a client
(MLflow's) so that the exceptions it raises carry redacted messages only; `redact_library_logs()`
redacts what HTTP libraries log (urllib3's retry warnings quote the request's path and query).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

MASK = "***"

URL_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DAGSTER_POSTGRES_URL")
"""Variables holding a URL whose credentials (user info, query values) are secret, not the rest."""

SECRET_VARIABLES = ("OPENLINEAGE_URL", "OPENLINEAGE_API_KEY", "GOVERNANCE_ALERT_WEBHOOK_URL", "TRAFFIC_DATABASE_URL")
"""Variables whose whole value is secret (a webhook's path is its key), beside those matched by name."""

_SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|WEBHOOK|CREDENTIAL|DATABASE_URL|_DSN", re.I
)
_MIN_SECRET_LENGTH = 4
"""Shorter values (`1`, `true`) would mask ordinary words; nobody uses them as secrets."""
_MIN_PATH_LENGTH = 8
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@'\"<>]+@")
_TOKEN_QUERY = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9_.\-]*(?:token|key|secret|password|passwd|pwd|signature|sig|auth|code)"
    r"[A-Za-z0-9_.\-]*)=)[^&#\s'\"<>]+",
    re.I,
)
_AUTH_HEADER = re.compile(r"(?P<name>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=\-]{8,}")

T = TypeVar("T")


def is_secret_variable(name: str) -> bool:
    """True for a variable whose whole value must never be shown."""
    return name in SECRET_VARIABLES or _SECRET_NAME.search(name) is not None


def _url_secrets(value: str, *, whole: bool) -> list[str]:
    """The secret parts of a URL: user info and query values; also the path when `whole`."""
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return []
    if not parts.scheme or not parts.netloc:
        return []
    found = [value for _, value in urllib.parse.parse_qsl(parts.query)]
    if parts.query:
        found.append(parts.query)
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        found += [userinfo, urllib.parse.unquote(userinfo), urllib.parse.unquote(parts.password or "")]
    if whole and len(parts.path.strip("/")) >= _MIN_PATH_LENGTH:
        found.append(parts.path.rstrip("/"))
    return found


def secret_values(environ: Mapping[str, str] | None = None, variables: Iterable[str] = ()) -> list[str]:
    """Every secret string the environment holds, longest first (so that no part survives a
    shorter replacement). `variables` names more variables whose whole value is secret."""
    environ = os.environ if environ is None else environ
    extra = set(variables)
    found: list[str] = []
    for name, value in environ.items():
        value = value.strip()
        if not value:
            continue
        if name in extra or is_secret_variable(name):
            found += [value, *_url_secrets(value, whole=True)]
        elif name in URL_VARIABLES:
            found += _url_secrets(value, whole=False)
    unique = {secret for secret in found if len(secret) >= _MIN_SECRET_LENGTH}
    return sorted(unique, key=lambda secret: (-len(secret), secret))


def redact(text: str, environ: Mapping[str, str] | None = None, variables: Iterable[str] = ()) -> str:
    """`text` with every secret masked as `***`: the values of secret variables (whole, and their
    URL parts), user info in any URL, token-like query values and Authorization credentials."""
    for secret in secret_values(environ, variables):
        text = text.replace(secret, MASK)
        quoted = urllib.parse.quote(secret, safe="")
        if quoted != secret:
            text = text.replace(quoted, MASK)
    text = _USERINFO.sub(lambda match: f"{match['scheme']}{MASK}@", text)
    text = _TOKEN_QUERY.sub(lambda match: f"{match['name']}{MASK}", text)
    return _AUTH_HEADER.sub(lambda match: f"{match['name']}{MASK}", text)


LOGGERS_QUOTING_URLS = (
    "urllib3.connectionpool",
    "urllib3.util.retry",
    "openlineage.client.client",
    "openlineage.client.transport.http",
)
"""Library loggers whose records quote request URLs (paths, query tokens) or client settings."""


class RedactingFilter(logging.Filter):
    """Keeps every record but rewrites its message with `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_library_logs(names: Iterable[str] = LOGGERS_QUOTING_URLS) -> None:
    """Redact the records of these loggers from now on (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactingFilter) for existing in logger.filters):
            logger.addFilter(RedactingFilter())


class RedactedError(RuntimeError):
    """An error re-raised with its message redacted; the original (which may quote a secret) is
    not chained, so Dagster's event log never stores its text."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {redact(str(original))}")
        self.original_type = type(original).__name__


def redacting(function: Callable[..., T]) -> Callable[..., T]:
    """`function`, raising RedactedError (unchained) instead of any error it raises."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        except RedactedError:
            raise
        except Exception as error:
            raise RedactedError(error) from None

    return call


class _RedactingProxy:
    """Forwards attribute access to the wrapped object; its methods raise RedactedError."""

    def __init__(self, wrapped: object) -> None:
        object.__setattr__(self, "_wrapped", wrapped)

    def __getattr__(self, name: str) -> Any:
        value = getattr(object.__getattribute__(self, "_wrapped"), name)
        return redacting(value) if callable(value) else value

    def __repr__(self) -> str:
        return redact(repr(object.__getattribute__(self, "_wrapped")))


def redacting_errors(client: T) -> T:
    """`client` (e.g. an MlflowClient) whose method calls raise RedactedError instead of errors
    whose text may quote the tracking URI with its password."""
    return cast(T, _RedactingProxy(client))
