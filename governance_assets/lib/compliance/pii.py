"""The PII screen: Presidio's pattern recognizers (with their checksums: Luhn for cards, IBAN's
mod-97, `phonenumbers` for phones) and credential patterns, run fully offline on a blank spaCy
pipeline. Only types, counts and redacted text leave this module, never a raw value."""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

PII_TYPES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "UK_NINO",
    "CREDENTIAL",
)
"""What the screen looks for; `CREDENTIAL` covers API keys, tokens, private keys and passwords."""

_CREDENTIAL_PATTERNS = (
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", 0.9),
    ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b", 0.95),
    ("openai_style_key", r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{20,}\b", 0.85),
    ("slack_token", r"\bxox[abprs]-[A-Za-z0-9\-]{10,}\b", 0.9),
    ("private_key", r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----", 0.99),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\b", 0.9),
    (
        "assigned_secret",
        r"(?i)\b(?:password|passwd|pwd|secret|api[_\-]?key|access[_\-]?token)\s*[:=]\s*['\"]?[^\s'\"]{6,}",
        0.8,
    ),
)
"""Named patterns of the `CREDENTIAL` recognizer (public formats of common providers)."""

MIN_SCORE = 0.4
"""Findings below this Presidio score are ignored: the weakest SSN patterns (bare 9-digit runs).
Phone numbers score 0.4 once `phonenumbers` has validated them (Presidio's context boost needs
lemmas, which a blank pipeline has not)."""


UNUSED_ML_BACKENDS = ("torch", "transformers")
"""Optional back-ends that Presidio (its NER recognizers, its GPU probe) and spaCy's thinc import
whenever they are installed. The screen's pattern recognizers on a blank pipeline use neither, so
they are hidden while Presidio loads: importing them took 3-4 of its 5-6 seconds."""


@dataclass(frozen=True)
class Finding:
    """One piece of personal data found in a text: its type and where, never its value."""

    pii_type: str
    start: int
    end: int
    score: float


def _offline_tldextract() -> None:
    """Presidio's e-mail recognizer validates domains with tldextract, which fetches the public
    suffix list on first use: make it use the snapshot it ships instead."""
    import tldextract.tldextract as tld

    tld.TLD_EXTRACTOR = tld.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def _blank_spacy_model() -> str:
    """A blank English spaCy pipeline on disk (Presidio loads models by path; the default
    `en_core_web_lg` is a download). Tokenisation is all the pattern recognizers need."""
    import spacy

    folder = Path(tempfile.gettempdir()) / f"governance_assets_spacy_blank_en_{spacy.about.__version__}"
    if not (folder / "meta.json").exists():
        with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
            spacy.blank("en").to_disk(scratch)
            try:
                Path(scratch).rename(folder)
            except OSError:  # another process made it first
                pass
            else:
                Path(scratch).mkdir()  # TemporaryDirectory cleans up the name it made
    return str(folder)


@cache
def _analyzer() -> Any:
    """Presidio's analyzer with the pattern recognizers of `PII_TYPES` only (built once)."""
    _offline_tldextract()
    hidden = [name for name in UNUSED_ML_BACKENDS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import torch` raises ImportError
    try:
        from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            UkNinoRecognizer,
            UsSsnRecognizer,
        )
    finally:
        for name in hidden:
            del sys.modules[name]

    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (
        EmailRecognizer(),
        PhoneRecognizer(supported_regions=("US", "UK", "DE", "FR", "IN", "CA", "AU")),
        CreditCardRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        UsSsnRecognizer(),
        UkNinoRecognizer(),
        PatternRecognizer(
            supported_entity="CREDENTIAL",
            patterns=[Pattern(name, regex, score) for name, regex, score in _CREDENTIAL_PATTERNS],
            context=["key", "token", "secret", "password", "credential"],
        ),
    ):
        registry.add_recognizer(recognizer)
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": _blank_spacy_model()}])
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def _without_overlaps(findings: list[Finding]) -> list[Finding]:
    """Where findings overlap keep the highest score (then the longest), as a redactor would."""
    kept: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (-f.score, f.start - f.end)):
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


def scan(text: str) -> list[Finding]:
    """Personal data in `text`, non-overlapping, in order."""
    if not text:
        return []
    results = _analyzer().analyze(text=text, language="en", entities=list(PII_TYPES), score_threshold=MIN_SCORE)
    return _without_overlaps([Finding(r.entity_type, r.start, r.end, float(r.score)) for r in results])


def redact(text: str, findings: Sequence[Finding]) -> str:
    """`text` with every finding replaced by `<TYPE>`."""
    parts, position = [], 0
    for finding in findings:
        parts += [text[position : finding.start], f"<{finding.pii_type}>"]
        position = finding.end
    return "".join([*parts, text[position:]])


def redacted_excerpt(text: str, findings: Sequence[Finding], width: int = 60) -> str:
    """A short redacted window around the first finding (for reports)."""
    clean = redact(text, findings)
    marker = f"<{findings[0].pii_type}>"
    at = clean.find(marker)
    start = max(0, at - width)
    excerpt = clean[start : at + len(marker) + width].replace("\n", " ")
    return ("…" if start else "") + excerpt + ("…" if at + len(marker) + width < len(clean) else "")


@dataclass(frozen=True)
class ScreenedText:
    """The screen's verdict on one text: types found and a redacted excerpt, no raw value."""

    types: Counter[str]
    excerpt: str | None


def screen(texts: Iterable[str | None]) -> list[ScreenedText]:
    """Scan each text (None counts as empty); a text that recurs (the same prompt or completion in
    several runs or trials) is scanned once."""
    verdicts: dict[str, ScreenedText] = {}
    results = []
    for text in texts:
        text = text or ""
        if text not in verdicts:
            findings = scan(text)
            verdicts[text] = ScreenedText(
                Counter(f.pii_type for f in findings), redacted_excerpt(text, findings) if findings else None
            )
        results.append(verdicts[text])
    return results
