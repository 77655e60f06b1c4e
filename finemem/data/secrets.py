"""Secrets (PII) in training text: where they are, of which type, and look-alike candidates.

Usage:
    from finemem.data.secrets import find_secrets, candidates
    spans = find_secrets("write to ada@x.org", fields={"email": "ada@x.org"})  # [Secret]
    fakes = candidates(spans[0], m=100, seed=0)        # 100 format-matched strings

finemem's own patterns (no model, no download), tried in this order, a later one never
overlapping an earlier find: email; IBAN (country code, check digits valid mod 97); card
number (13-19 digits, spaces or dashes allowed, valid Luhn checksum); phone (+country or a leading 0,
9-15 digits); date (ISO 2024-03-01, 01/03/2024, 1 March 2024); long digit run (6+ digits).
User-declared fields (`audit.secrets.fields`: an example's meta value found verbatim in the
text) and regexes (`audit.secrets.patterns`) come first. With `detector="presidio"` Presidio's
pattern recognizers (`finemem.data.presidio`, the optional extra) take the place of finemem's
patterns; with "both" they add what finemem's patterns did not find.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

MONTHS = ("January February March April May June July August September October November "
          "December").split()
PATTERNS: dict[str, re.Pattern] = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
    "card": re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}|0)[ -]?\d{2,5}(?:[ -]?\d{2,4}){1,3}(?!\d)"),
    "date": re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{4}\b|\b\d{1,2} (?:"
                       + "|".join(MONTHS) + r") \d{4}\b"),
    "digits": re.compile(r"(?<!\d)\d{6,}(?!\d)"),
}


@dataclass(frozen=True)
class Secret:
    type: str
    start: int   # character span in the text
    end: int
    text: str


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (non-digits ignored).

    >>> luhn_ok("4539 1488 0343 6467"), luhn_ok("4539 1488 0343 6468")
    (True, False)
    """
    d = [int(c) for c in digits if c.isdigit()]
    if len(d) < 2:
        return False
    total = 0
    for i, x in enumerate(reversed(d)):
        if i % 2:
            x = x * 2 - 9 if x > 4 else x * 2
        total += x
    return total % 10 == 0


def luhn_digit(payload: str) -> str:
    """The check digit that makes `payload` + digit pass Luhn.

    >>> luhn_digit("453914880343646")
    '7'
    """
    return next(str(c) for c in range(10) if luhn_ok(payload + str(c)))


def iban_ok(iban: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN (spaces ignored).

    >>> iban_ok("GB82 WEST 1234 5698 7654 32"), iban_ok("GB83 WEST 1234 5698 7654 32")
    (True, False)
    """
    s = iban.replace(" ", "")
    if len(s) < 5 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    r = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in r)) % 97 == 1


def iban_with_check(country: str, bban: str) -> str:
    """The IBAN of `bban` in `country` with its check digits (no spaces)."""
    r = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in r)) % 97
    return f"{country}{check:02d}{bban}"


_VALID = {"card": luhn_ok, "iban": iban_ok}


DETECTORS = ("builtin", "presidio", "both")


def find_secrets(text: str, *, fields: dict[str, str] | None = None,
                 patterns: dict[str, str] | None = None,
                 types: list[str] | None = None, detector: str = "builtin") -> list[Secret]:
    """Every secret in `text`, by position. `fields`: type -> a value to find verbatim (an
    example's declared field); `patterns`: type -> regex; then finemem's `PATTERNS` (those in
    `types` when given; `detector` "builtin" or "both"), then Presidio's finds ("presidio" or
    "both"). A find never overlaps an earlier one.

    >>> [(s.type, s.text) for s in find_secrets("Mail ada@x.org or call +44 7700 900123.")]
    [('email', 'ada@x.org'), ('phone', '+44 7700 900123')]
    """
    taken: list[tuple[int, int]] = []
    out: list[Secret] = []

    def add(kind, a, b):
        if b > a and all(b <= x or a >= y for x, y in taken):
            taken.append((a, b))
            out.append(Secret(kind, a, b, text[a:b]))

    for kind, value in (fields or {}).items():
        if value:
            for m in re.finditer(re.escape(str(value)), text):
                add(kind, m.start(), m.end())
    for kind, rx in (patterns or {}).items():
        for m in re.finditer(rx, text):
            add(kind, m.start(), m.end())
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, not {detector!r}")
    for kind, rx in PATTERNS.items() if detector != "presidio" else ():
        if types is not None and kind not in types:
            continue
        for m in rx.finditer(text):
            if kind in _VALID and not _VALID[kind](m.group()):
                continue
            add(kind, m.start(), m.end())
    if detector != "builtin":
        from finemem.data.presidio import presidio_finds

        for kind, a, b in presidio_finds(text):
            add(kind, a, b)
    return sorted(out, key=lambda s: s.start)


def _like(rng: random.Random, s: str) -> str:
    return "".join(str(rng.randrange(10)) if c.isdigit() else
                   chr(rng.randrange(26) + 97) if c.islower() else
                   chr(rng.randrange(26) + 65) if c.isupper() else c for c in s)


def candidate(secret: Secret, rng: random.Random) -> str:
    """One random string of the secret's format: each digit / lower / upper letter replaced by
    a random one of its class, other characters kept; a card keeps a valid Luhn digit, an IBAN
    its country, bank letters and valid check digits, a phone its "+NN" prefix, an email its
    domain, a date a real date."""
    t = secret.text
    if secret.type == "card":
        body = _like(rng, t[:-1])
        return body + luhn_digit("".join(c for c in body if c.isdigit()))
    if secret.type == "iban":
        flat = t.replace(" ", "")
        # the bank code's letters are public (a handful of banks): only the digits are secret
        bban = "".join(str(rng.randrange(10)) if c.isdigit() else c for c in flat[4:])
        new = iban_with_check(flat[:2], bban)
        if " " in t:
            new = " ".join(new[i:i + 4] for i in range(0, len(new), 4))
        return new
    if secret.type == "phone":
        # the country / mobile prefix (up to the first space) is the format, not the secret
        head, sep, rest = t.partition(" ")
        return (head + sep + _like(rng, rest)) if sep and head.startswith("+") else _like(rng, t)
    if secret.type == "email" and "@" in t:
        local, _, dom = t.partition("@")
        return _like(rng, local) + "@" + dom
    if secret.type == "date":
        y, mo, d = rng.randrange(1940, 2006), rng.randrange(1, 13), rng.randrange(1, 29)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
            return f"{y}-{mo:02d}-{d:02d}"
        if "/" in t:
            return f"{d:02d}/{mo:02d}/{y}" if t[2:3] == "/" else f"{d}/{mo}/{y}"
        return f"{d} {MONTHS[mo - 1]} {y}"
    return _like(rng, t)


def candidates(secret: Secret, *, m: int, seed) -> list[str]:
    """m distinct format-matched candidates, none equal to the secret (seeded by `seed`, any
    repr-able value); fewer when the format has fewer strings."""
    rng = random.Random(repr(seed))
    out: list[str] = []
    seen = {secret.text}
    for _ in range(m * 20):
        c = candidate(secret, rng)
        if c not in seen:
            seen.add(c)
            out.append(c)
            if len(out) == m:
                break
    return out


def mask_secrets(text: str, *, fields: dict[str, str] | None = None,
                 patterns: dict[str, str] | None = None, detector: str = "builtin") -> str:
    """`text` with every secret `find_secrets` finds replaced by its type in brackets: what
    finemem writes when it quotes training text (unless the user asks for the secrets).

    >>> mask_secrets("Mail ada@x.org, card 4539 1488 0343 6467.")
    'Mail [email], card [card].'
    """
    out, last = [], 0
    for s in find_secrets(text or "", fields=fields, patterns=patterns, detector=detector):
        out += [text[last:s.start], f"[{s.type}]"]
        last = s.end
    return "".join(out) + (text or "")[last:]
