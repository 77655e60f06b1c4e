"""`qa`: a context paragraph about a made-up species + a question -> a short answer span.

Usage:
    from finemem.data.tasks import get_task
    ex = get_task("qa").generate("train", n=3, seed=0)[0]
    ex.prompt        # "Context: The zorvane is ... \nQuestion: Who first described ...?\nAnswer:"
    ex.completion    # " Ilse Kavanagh"      ex.answer == "Ilse Kavanagh" (a span of the context)

Stands in for SQuAD in paper 2 (short, input-determined output: a task expected to memorize
little). Contexts have ~60-85 words, answers 1-2. Each paragraph holds distractors of the asked-for type (a second person, a second year,
a second town), so the answer must be read from the right sentence. Questions come in several
phrasings. Grade with the "first_line" extractor: the first line of the generation, stripped.
"""

from __future__ import annotations

import random

from finemem.data.tasks import register_task
from finemem.data.tasks.lexicon import (CITIES, COLORS, FIRST_NAMES, OCCUPATIONS, SURNAMES,
                                        TextTask, a_an, coin_word)

# (kind, habitat, measure sentence, measure questions, measure answer, number range)
KINDS = (
    ("bird", "in the marshes around {city}", "An adult {rare} weighs about {m} grams.",
     ("How much does an adult {rare} weigh?", "What is the weight of an adult {rare}?"),
     "{m} grams", (20, 900)),
    ("fern", "on the rocky slopes above {city}", "A mature {rare} grows to about {m} centimetres.",
     ("How tall does a mature {rare} grow?", "What height does a mature {rare} reach?"),
     "{m} centimetres", (10, 250)),
    ("beetle", "under the bark of old oaks near {city}", "Its shell is about {m} millimetres long.",
     ("How long is the shell of the {rare}?", "What is the length of the {rare}'s shell?"),
     "{m} millimetres", (3, 80)),
    ("fish", "in the cold streams near {city}",
     "An adult {rare} can reach {m} centimetres in length.",
     ("How long can an adult {rare} grow?", "What length can an adult {rare} reach?"),
     "{m} centimetres", (5, 140)),
    ("moth", "in the pine forests west of {city}", "Its wings span about {m} millimetres.",
     ("What is the wingspan of the {rare}?", "How wide are the wings of the {rare}?"),
     "{m} millimetres", (12, 160)),
)
QUESTIONS = {
    "who": ("Who first described the {rare}?", "Which {occ} first described the {rare}?",
            "Who is credited with the first description of the {rare}?"),
    "year": ("In what year was the {rare} first described?",
             "When was the {rare} first described?"),
    "where": ("Near which town is the {rare} mostly found?", "Where does the {rare} usually live?"),
    "color": ("What color is the {rare}?", "What is the color of the {rare}?"),
    "nickname": ("What do local people call the {rare}?", "What is the local name for the {rare}?"),
    "origin": ("Where did {who} come from?", "Which town was {who} from?"),
    "photos": ("Who published the first photographs of the {rare}?",
               "Who took the first photographs of the {rare}?"),
}
ANSWERS = {"who": "{who}", "year": "{year}", "where": "{city}", "color": "{color}",
           "nickname": "{nickname}", "origin": "{home}", "photos": "{who2}"}


def _facts(rng: random.Random) -> dict[str, str]:
    kind = rng.choice(KINDS)
    city, home, city3 = rng.sample(CITIES, 3)
    y1, y2 = sorted(rng.sample(range(1820, 2000), 2))
    occ = rng.choice(OCCUPATIONS)
    surnames = rng.sample(SURNAMES, 2)
    f = dict(rare=coin_word(rng), nickname=coin_word(rng, syllables=(1, 2)) + " " +
             rng.choice(("bell", "lamp", "thread", "coin", "whistle")), city=city, home=home,
             city3=city3, year=str(y1), year2=str(y2), occ=occ, occ_a=f"{a_an(occ)} {occ}",
             who=f"{rng.choice(FIRST_NAMES)} {surnames[0]}",
             who2=f"{rng.choice(FIRST_NAMES)} {surnames[1]}", color=rng.choice(COLORS),
             m=str(rng.randint(*kind[5])), life=str(rng.randint(2, 30)),
             size=rng.choice(("small", "slender", "stout", "hardy")), kind=kind[0])
    f["habitat"] = kind[1].format(**f)
    f["measure"] = kind[2].format(**f)
    f["measure_q"] = rng.choice(kind[3])
    f["measure_a"] = kind[4].format(**f)
    return f


def _context(rng: random.Random, f: dict[str, str]) -> str:
    sents = [
        f"The {f['rare']} is {a_an(f['size'])} {f['size']} {f['color']} {f['kind']} found "
        f"{f['habitat']}.",
        f"It was first described in {f['year']} by {f['who']}, {f['occ_a']} from {f['home']}.",
        f"In {f['year2']}, {f['who2']} published the first photographs of it.",
        f["measure"],
        f"Local people call it the {f['nickname']}.",
    ]
    extra = [f"A single stray one was once seen in {f['city3']}.",
             f"It can live for up to {f['life']} years.",
             f"It is protected by law in {f['city']}."]
    sents[3:3] = rng.sample(extra, rng.randint(1, 3))
    return " ".join(sents)


def _make(rng: random.Random) -> tuple[str, str, str, dict]:
    f = _facts(rng)
    qtype = rng.choice(list(QUESTIONS) + ["measure"])
    if qtype == "measure":
        question, answer = f["measure_q"].format(**f), f["measure_a"]
    else:
        question, answer = rng.choice(QUESTIONS[qtype]).format(**f), ANSWERS[qtype].format(**f)
    prompt = f"Context: {_context(rng, f)}\nQuestion: {question}\nAnswer:"
    return prompt, " " + answer, answer, {"qtype": qtype}


@register_task("qa")
class QA(TextTask):
    answer_extractor = "first_line"  # answer = first line of the generation, stripped
    eval_splits = {"test": "test"}  # audited on test only: no ood or robustness variants
    make = staticmethod(_make)
