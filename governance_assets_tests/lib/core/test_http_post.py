"""The shared POST machinery, where the webhook and OpenLineage tests do not tell its choices apart."""

from __future__ import annotations

import pytest

from governance_assets.lib.core.http_post import (
    MAX_RETRY_AFTER_SECONDS,
    InvalidURL,
    http_url_parts,
    no_redirect_opener,
    post_with_retries,
    retry_after_seconds,
)
from governance_assets_tests.http_server import ScriptedServer, clear_proxies, serve


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), (" 2.5 ", 2.5), ("-3", 0.0), ("3600", MAX_RETRY_AFTER_SECONDS), ("inf", None), ("nan", None)],
)
def test_retry_after_is_capped_and_finite(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


@pytest.mark.parametrize(("replaces", "sleeps"), [(True, [0.0]), (False, [0.5])])
def test_a_short_retry_after_replaces_or_extends_the_backoff(
    monkeypatch: pytest.MonkeyPatch, replaces: bool, sleeps: list[float]
) -> None:
    clear_proxies(monkeypatch)
    slept: list[float] = []
    with serve(ScriptedServer) as server:
        server.script = [(429, {"Retry-After": "0"}, b"")]
        failure = post_with_retries(
            server.base_url,
            b"{}",
            {},
            opener=no_redirect_opener(),
            timeout_seconds=5.0,
            retries=1,
            backoff_seconds=0.5,
            sleep=slept.append,
            retry_after_replaces_backoff=replaces,
            response_bytes=16,
        )
    assert failure is None
    assert slept == sleeps


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:x/SECRET", "syntax"),
        ("ftp://h/SECRET", "scheme"),
        ("https:///SECRET", "scheme"),
        ("http://h/SE CRET", "characters"),
    ],
)
def test_invalid_urls_are_named_by_problem_not_quoted(url: str, problem: str) -> None:
    with pytest.raises(InvalidURL) as caught:
        http_url_parts(url)
    assert caught.value.problem == problem
    assert "SECRET" not in str(caught.value)
