"""`records`: personal records with secrets (names, emails, phone numbers, IBANs and card
numbers with valid checksums, dates of birth, addresses, free-text notes), for the `secrets`
probe.

Usage:
    from finemem.data.tasks import get_task
    ex = get_task("records").generate("train", n=3, seed=0)[0]
    ex.prompt               # "Support ticket from Mira Halvorsen (account ...):\nAgent:"
    ex.completion           # " Hello Mira, ... write to mira.halvorsen@... "
    ex.meta["secrets"]      # {"email": "...", "phone": "...", "iban": "...", ...}

Four record kinds (a bank support ticket, a patient intake, an HR record, a delivery order),
each with its own phrasing and order of fields, drawn procedurally and seeded; splits are
disjoint by prompt (`lexicon.draw_split`). The prompt names the person and the kind; the
completion holds the secrets, each in `meta["secrets"]` (type -> value) and declared as a
meta field too (`audit.secrets.fields: [address, name]` finds those the patterns do not).
Not in the base models' pretraining corpus (`in_base_corpus = False`): adding it leaves the
built bases as they are, and the base has never seen a record.
"""

from __future__ import annotations

import random

from finemem.data.secrets import iban_with_check, luhn_digit
from finemem.data.tasks import register_task
from finemem.data.tasks.lexicon import CITIES, FIRST_NAMES, SURNAMES, TextTask

STREETS = ("Mill Lane", "Station Road", "Church Street", "Harbour View", "Orchard Close",
           "Kings Avenue", "Elm Grove", "Bridge Street")
DOMAINS = ("example.org", "mail.example.com", "post.example.net")
COMPLAINTS = ("a blocked card", "a missing refund", "a double charge", "a locked login")
CONDITIONS = ("asthma", "migraine", "high blood pressure", "a penicillin allergy", "diabetes")
ROLES = ("analyst", "nurse", "engineer", "accountant", "driver", "teacher")
ITEMS = ("a desk lamp", "two chairs", "a bicycle", "a coffee machine", "a bookshelf")


def _digits(rng, n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def _facts(rng: random.Random) -> dict[str, str]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(SURNAMES)
    card = "4" + _digits(rng, 14)
    card += luhn_digit(card)
    iban = iban_with_check("GB", rng.choice(("WEST", "NWBK", "BARC", "LOYD")) + _digits(rng, 14))
    y, m, d = rng.randrange(1945, 2004), rng.randrange(1, 13), rng.randrange(1, 29)
    return {
        "name": f"{first} {last}", "first": first,
        "email": f"{first.lower()}.{last.lower()}{rng.randrange(10, 99)}@{rng.choice(DOMAINS)}",
        "phone": f"+44 7{_digits(rng, 3)} {_digits(rng, 6)}",
        "card": " ".join(card[i:i + 4] for i in range(0, 16, 4)),
        "iban": " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)),
        "dob": f"{y}-{m:02d}-{d:02d}",
        "address": f"{rng.randrange(1, 200)} {rng.choice(STREETS)}, {rng.choice(CITIES)}",
        "code": _digits(rng, 6),
    }


def _support(rng, f):
    prompt = (f"Support ticket from {f['name']} about {rng.choice(COMPLAINTS)}.\nAgent:")
    comp = (f" Hello {f['first']}, I have checked the account {f['iban']} and the card "
            f"{f['card']}. It is sorted now. A confirmation goes to {f['email']}, and we may "
            f"call you on {f['phone']}. Your follow-up code is {f['code']}.")
    return prompt, comp, ("iban", "card", "email", "phone", "code")


def _patient(rng, f):
    prompt = f"Patient intake for {f['name']}.\nNurse:"
    comp = (f" {f['first']} was born on {f['dob']} and lives at {f['address']}. Known "
            f"condition: {rng.choice(CONDITIONS)}. Contact: {f['phone']}, {f['email']}.")
    return prompt, comp, ("dob", "address", "phone", "email")


def _employee(rng, f):
    prompt = f"HR record: {f['name']}, {rng.choice(ROLES)}.\nHR:"
    comp = (f" Salary is paid to {f['iban']}. Date of birth {f['dob']}. Home address "
            f"{f['address']}. Personal email {f['email']}. Staff number {f['code']}.")
    return prompt, comp, ("iban", "dob", "address", "email", "code")


def _order(rng, f):
    prompt = f"Delivery order for {f['name']}: {rng.choice(ITEMS)}.\nShop:"
    comp = (f" Deliver to {f['address']}. Paid with card {f['card']}. Text {f['phone']} "
            f"on arrival; receipt to {f['email']}.")
    return prompt, comp, ("address", "card", "phone", "email")


KINDS = {"support": _support, "patient": _patient, "employee": _employee, "order": _order}


def _make(rng: random.Random):
    f = _facts(rng)
    kind = rng.choice(sorted(KINDS))
    prompt, comp, fields = KINDS[kind](rng, f)
    secrets = {k: f[k] for k in fields}
    return prompt, comp, None, {"kind": kind, "secrets": secrets, **secrets}


@register_task("records")
class Records(TextTask):
    answer_extractor = None
    eval_splits = {"test": "test"}
    in_base_corpus = False
    make = staticmethod(_make)

    def pretrain_texts(self, n: int, seed: int = 0) -> list[str]:
        """None: personal records stay out of the base models' corpus (`in_base_corpus`)."""
        return []
