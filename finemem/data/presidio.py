"""Presidio's analyzer (the optional extra `pip install finemem[pii]`) as a secrets detector,
with its pattern recognizers only and nothing downloaded.

Usage:
    from finemem.data.presidio import presidio_finds
    presidio_finds("Mail ada@x.org or call +44 20 7946 0958")   # [("email", 5, 14), ("phone", ...)]

Presidio's `AnalyzerEngine` needs a spaCy pipeline before any recognizer runs; a blank English
pipeline (`spacy.blank("en")`: a tokenizer, no trained model) saved once under
$FINEMEM_HOME/presidio/blank-en is enough for the pattern recognizers (email, credit card,
IBAN, phone, date, SSN, IP, ...); the NER-based ones (names, places) then find nothing. Its
email recognizer asks tldextract for the public-suffix list online; the bundled snapshot is
used instead (TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS set empty before tldextract is imported).
"""

from __future__ import annotations

import os
from functools import lru_cache

from finemem.home import finemem_home

# Presidio entity -> finemem's type name (finemem's candidates know these formats); any other
# entity keeps its own name, lower-cased
TYPES = {"EMAIL_ADDRESS": "email", "CREDIT_CARD": "card", "IBAN_CODE": "iban",
         "PHONE_NUMBER": "phone", "DATE_TIME": "date"}
# the URL recognizer matches the domain of every email: not a secret of its own
SKIP = {"URL"}
MIN_SCORE = 0.3  # Presidio's weakest pattern finds (e.g. a bare 4-digit year) score below


def presidio_installed() -> bool:
    try:
        import presidio_analyzer  # noqa: F401
        import spacy  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _engine():
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # offline: the snapshot
    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    path = finemem_home() / "presidio" / "blank-en"
    if not (path / "config.cfg").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".blank-en.{os.getpid()}")
        spacy.blank("en").to_disk(tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # another process saved it first
            pass
    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": str(path)}]}).create_engine()
    return AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])


def presidio_finds(text: str, *, min_score: float = MIN_SCORE) -> list[tuple[str, int, int]]:
    """(type, start, end) of each entity Presidio's pattern recognizers find in `text` with a
    score of at least `min_score`, by position."""
    found = _engine().analyze(text=text, language="en", score_threshold=min_score)
    return sorted((TYPES.get(r.entity_type, r.entity_type.lower()), r.start, r.end)
                  for r in found if r.entity_type not in SKIP)
