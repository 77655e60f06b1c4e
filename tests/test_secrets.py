"""Secrets: detection (patterns with checksums, declared fields, regexes), format-matched
candidates, the built-in records task, and the `secrets` probe end to end."""

import random

import pytest

from finemem.data.secrets import (Secret, candidates, find_secrets, iban_ok, luhn_ok)
from finemem.metrics.secrets import exposure_among, secret_reproduced


def test_patterns_find_each_type_and_check_checksums():
    text = ("Mail ada.l@mail.example.com, call +44 7700 900123 or 020 7946 0958; card "
            "4539 1488 0343 6467, IBAN GB82 WEST 1234 5698 7654 32, born 1984-03-12, "
            "code 482913. Bad card 4539 1488 0343 6468.")
    got = [(s.type, s.text) for s in find_secrets(text)]
    assert ("email", "ada.l@mail.example.com") in got
    assert ("phone", "+44 7700 900123") in got and ("phone", "020 7946 0958") in got
    assert ("card", "4539 1488 0343 6467") in got
    assert ("iban", "GB82 WEST 1234 5698 7654 32") in got
    assert ("date", "1984-03-12") in got and ("digits", "482913") in got
    assert not any(t == "card" and "6468" in x for t, x in got)   # fails Luhn
    for s in find_secrets(text):
        assert text[s.start:s.end] == s.text


def test_declared_fields_and_patterns_come_first():
    text = "Lives at 12 Mill Lane, Carrow. Ref AB-77."
    got = find_secrets(text, fields={"address": "12 Mill Lane, Carrow"},
                       patterns={"ref": r"[A-Z]{2}-\d\d"})
    assert [(s.type, s.text) for s in got] == [("address", "12 Mill Lane, Carrow"),
                                               ("ref", "AB-77")]


def test_candidates_match_the_format_and_checksums():
    card = Secret("card", 0, 19, "4539 1488 0343 6467")
    iban = Secret("iban", 0, 27, "GB82 WEST 1234 5698 7654 32")
    mail = Secret("email", 0, 12, "ada.l@ex.org")
    for c in candidates(card, m=50, seed=0):
        assert luhn_ok(c) and len(c) == 19 and c[4] == " " and c != card.text
    for c in candidates(iban, m=50, seed=0):
        assert iban_ok(c) and c[:2] == "GB" and len(c) == len(iban.text)
    ms = candidates(mail, m=30, seed=1)
    assert len(set(ms)) == 30 and all(c.endswith("@ex.org") and len(c) == 12 for c in ms)
    assert ms == candidates(mail, m=30, seed=1)


def test_reproduced_and_exposure_hand_computed():
    assert secret_reproduced(" ada@x.org. Bye", "ada@x.org")
    assert not secret_reproduced(" ada@x.or", "ada@x.org")
    # ranks 1 of 4 (log2 4 - 0 = 2 bits) and 4 of 4 (0 bits)
    assert exposure_among([1.0, 5.0], [[2, 3, 4], [1, 2, 3]]).tolist() == [2.0, 0.0]


def test_records_task_is_seeded_disjoint_and_its_secrets_are_found():
    from finemem.data.tasks import get_task

    t = get_task("records")
    tr, te = t.generate("train", 60, 0), t.generate("test", 60, 0)
    assert [e.completion for e in tr] == [e.completion for e in t.generate("train", 60, 0)]
    assert not {e.prompt for e in tr} & {e.prompt for e in te}
    assert len({e.meta["kind"] for e in tr}) == 4
    for e in tr:
        found = {s.text for s in find_secrets(e.completion, fields={"address":
                                                                    e.meta.get("address", "")})}
        for kind, value in e.meta["secrets"].items():
            assert value in e.completion and value in found, (kind, value, e.completion)
        if "card" in e.meta:
            assert luhn_ok(e.meta["card"])
        if "iban" in e.meta:
            assert iban_ok(e.meta["iban"])


def test_records_leave_the_base_models_as_built():
    from finemem.models.base import build_spec

    assert "records" not in build_spec("test")["corpus"]["tasks"]
