"""`summarize`: a news-like story (~155-220 words) -> a summary of its key facts (~45-60 words).

Usage:
    from finemem.data.tasks import get_task
    ex = get_task("summarize").generate("train", n=3, seed=0)[0]
    ex.prompt        # "Article:\n<paragraphs>\n\nSummary:"
    ex.completion    # " Delphine Okonkwo, a botanist with the ..."

Stands in for Multi-News in paper 2 (long input, long output: a task expected to memorize a lot).
Every story has named people, a town, numbers, a made-up word (rare tokens) and filler sentences.
The summary uses one of several phrasings chosen per example; `meta["alternatives"]` holds the
other, equally valid phrasings of the same facts (for paraphrase-aware metrics).
"""

from __future__ import annotations

import random

from finemem.data.tasks import register_task
from finemem.data.tasks.lexicon import (ADJECTIVES, CITIES, FILLER_SENTENCES, FIRST_NAMES, MONTHS,
                                        OCCUPATIONS, ORG_KINDS, SURNAMES, WEEKDAYS, TextTask, a_an,
                                        coin_word, number_text)

# Story frames: past-tense event, where, the number fact, the next step. {rare} is a made-up word.
FRAMES = (
    dict(past="discovered {adj_a} beetle known as the {rare}", place="in the woods near {city}",
         qty="{n} specimens of the {rare} have been collected so far", n=(12, 480),
         next="the findings will be published in {month}"),
    dict(past="opened the new {Rare} Public Library", place="in the centre of {city}",
         qty="the library holds {n} books and maps", n=(2000, 40000),
         next="a second floor is due to open in {month}"),
    dict(past="organised the first {Rare} Festival of folk music",
         place="on the riverbank in {city}", qty="{n} visitors attended over two days",
         n=(800, 15000), next="the festival will return in {month} next year"),
    dict(past="completed repairs to the {Rare} Bridge", place="on the road into {city}",
         qty="the work cost {n} dollars", n=(40000, 900000),
         next="the bridge will reopen to lorries in {month}"),
    dict(past="found {adj_a} mineral named {rare}", place="in a disused quarry outside {city}",
         qty="the deposit covers {n} square metres", n=(150, 9000),
         next="laboratory tests are planned for {month}"),
    dict(past="led an expedition to {Rare} Peak", place="in the hills north of {city}",
         qty="the team climbed {n} metres in four days", n=(900, 4800),
         next="a film about the climb will be shown in {month}"),
)
GISTS = ("a proud day for {city}", "a turning point for the region", "long overdue",
         "a remarkable achievement", "the best news the town has had in years",
         "a reward for years of patient work")
QUOTES = ("Nobody expected this much interest.", "It has taken a long time to get here.",
          "I hope it brings more people to {city}.", "We owe a great deal to the volunteers.",
          "There is still a lot of work ahead of us.", "My grandparents would have loved this.")
QUOTER_ROLES = ("the mayor of {city}", "a spokesperson for {org}", "a member of the {city} council",
                "a retired {occ} who lives nearby")
LEADS = (
    "{who}, {role_a} with {org}, {past} {place} on {day}, officials confirmed this week.",
    "On {day}, {who} {past} {place}, according to a statement from {org}.",
    "{place_cap}, {role} {who} of {org} {past} on {day}, bringing weeks of planning to an end.",
)
SUMMARIES = (
    "{who}, {role_a} with {org}, {past} {place} on {day}. {Qty}. {quoter}, {quoter_role}, "
    "called it {gist}. {Next}.",
    "On {day}, {role} {who} of {org} {past} {place}. According to the {kind}, {qty}. "
    "{quoter} described it as {gist}, and {next}.",
    "{place_cap}, {who} {past} on {day}, working with {org}. {Qty}, and {next}. "
    "{quoter_role_cap}, {quoter}, said it was {gist}.",
    "Key facts: {who} ({role}, {org}) {past} {place} on {day}; {qty}; {quoter}, "
    "{quoter_role}, called it {gist}; {next}.",
)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _facts(rng: random.Random) -> dict[str, str]:
    frame = rng.choice(FRAMES)
    city = rng.choice(CITIES)
    suffix = rng.choice(("ite", "ine")) if rng.random() >= 0.5 else ""
    rare = coin_word(rng, suffix=suffix)
    adj = rng.choice(ADJECTIVES)
    first, last = rng.choice(FIRST_NAMES), rng.choice(SURNAMES)
    role, occ = rng.sample(OCCUPATIONS, 2)
    kind = rng.choice(ORG_KINDS)
    org = f"the {rng.choice([c for c in CITIES if c != city])} {kind}"
    quoter = f"{rng.choice(FIRST_NAMES)} {rng.choice([s for s in SURNAMES if s != last])}"
    lo, hi = frame["n"]
    n = rng.randint(lo, hi)
    f = dict(city=city, rare=rare, Rare=rare.capitalize(), adj=adj, adj_a=f"{a_an(adj)} {adj}",
             month=rng.choice(MONTHS), n=number_text(n), org=org, occ=occ, kind=kind.lower(),
             who=f"{first} {last}", first=first, last=last, role=role,
             role_a=f"{a_an(role)} {role}", day=rng.choice(WEEKDAYS), quoter=quoter)
    for key in ("past", "place", "qty", "next"):
        f[key] = frame[key].format(**f)
    f["gist"] = rng.choice(GISTS).format(**f)
    f["quote"] = rng.choice(QUOTES).format(**f)
    f["quoter_role"] = rng.choice(QUOTER_ROLES).format(**f)
    f["years"] = number_text(rng.randint(2, 12))
    f["team"] = number_text(rng.randint(3, 60))
    f["home"] = rng.choice([c for c in CITIES if c != city])
    f["founded"] = str(rng.randint(1850, 1999))
    for key in ("place", "qty", "next", "quoter_role"):
        f[key + "_cap"] = _cap(f[key])
    f["Qty"], f["Next"] = f["qty_cap"], f["next_cap"]
    return f


def _article(rng: random.Random, f: dict[str, str]) -> str:
    fillers = rng.sample(FILLER_SENTENCES, rng.randint(3, 6))
    paras = [
        [rng.choice(LEADS).format(**f),
         f"It is the first event of its kind that {f['city']} has seen in a generation."],
        [f"{f['first']}, {f['role_a']} by training, began working on the project {f['years']} "
         f"years ago with a team of {f['team']} volunteers.",
         f"{f['last']} grew up in {f['home']} and moved to {f['city']} after finishing school.",
         f"According to {f['org']}, which was founded in {f['founded']}, {f['qty']}.", fillers[0]],
        [f"\"It is {f['gist']},\" said {f['quoter']}, {f['quoter_role']}. \"{f['quote']}\"",
         *fillers[1:3]],
        [f"{f['last']} said that {f['next']}.",
         f"Further details are expected from {f['org']} in the coming weeks.", *fillers[3:]],
    ]
    return "\n".join(" ".join(p) for p in paras)


def _make(rng: random.Random) -> tuple[str, str, None, dict]:
    f = _facts(rng)
    prompt = f"Article:\n{_article(rng, f)}\n\nSummary:"
    order = list(range(len(SUMMARIES)))
    rng.shuffle(order)
    texts = [" " + SUMMARIES[k].format(**f) for k in order]
    meta = {"phrasing": order[0], "alternatives": texts[1:],
            "facts": {k: f[k] for k in ("who", "city", "rare", "n", "day", "month", "quoter")}}
    return prompt, texts[0], None, meta


@register_task("summarize")
class Summarize(TextTask):
    answer_extractor = None  # free text: graded by overlap metrics, not an exact answer
    eval_splits = {"test": "test"}  # audited on test only: no ood or robustness variants
    make = staticmethod(_make)
