"""The shared POST machinery, where the webhook and OpenLineage tests do not tell its choices apart."""

from __future__ import annotations

import pytest

from governance_assets.lib.core.http_post import (
    MAX_RETRY_AFTER_SECONDS,
    InvalidURL,
    http_url_parts,
    retry_after_seconds,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), (" 2.5 ", 2.5), ("-3", 0.0), ("3600", MAX_RETRY_AFTER_SECONDS), ("inf", None), ("nan", None)],
)
def test_retry_after_is_capped_and_finite(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


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
