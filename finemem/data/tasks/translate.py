"""`translate`: an English sentence -> the same sentence in Veltish, a fixed toy language.

Usage:
    from finemem.data.tasks import get_task
    ex = get_task("translate").generate("train", n=3, seed=0)[0]
    ex.prompt        # "English: Yesterday, the old farmer carried a heavy basket to the market.\n"
                     # "Veltish:"  (for example)
    ex.completion    # " Ierva, lo rimref-o dlu-i un tikseb-o yveih-i ke yrrec-ut lo tikrem-o ka."

Stands in for WMT16 in paper 2 (output fully determined by the input: a task expected to
memorize little). Sentences have 7-28 words, translations 6-26 (one or two clauses). Veltish is fixed and seed-independent:
- content words (nouns, verbs, adjectives, also words it has never seen) become their letters
  reversed with vowels rotated a->e->i->o->u->a (`stem`), plus a suffix for the part of speech:
  noun -o (plural -oi), adjective -i, verb past -ut / present -an / future -ir;
- function words and time phrases come from a small dictionary (`FUNCTION`, `TIMES`);
- names stay as they are;
- order: time first, then subject, object + "ke", verb, then place phrases with postpositions
  ("to the market" -> "lo tikrem-o ka"); adjectives follow their noun; clauses join with e / ma.
The same English sentence always gets the same translation. Grade with "first_line".
"""

from __future__ import annotations

import random

from finemem.data.tasks import register_task
from finemem.data.tasks.lexicon import (ADJECTIVES, CITIES, FIRST_NAMES, RARE_WORDS, SURNAMES,
                                        TextTask, a_an)

AGENTS = tuple(w.split("/") for w in """
farmer teacher child/children doctor painter merchant sailor student baker soldier singer girl
boy miller hunter weaver fox/foxes horse
""".split())
THINGS = tuple(w.split("/") for w in """
basket market letter river bridge box/boxes lantern garden window song wall coin boat book
loaf/loaves cart sword village flower kite sack cloth
""".split())
VERBS = tuple(w.split("/") for w in """
carry/carried/carries paint/painted/paints find/found/finds sell/sold/sells build/built/builds
open/opened/opens hide/hid/hides watch/watched/watches mend/mended/mends draw/drew/draws
bring/brought/brings follow/followed/follows clean/cleaned/cleans push/pushed/pushes
buy/bought/buys lift/lifted/lifts wash/washed/washes carve/carved/carves
""".split())
PREPS = {"to": "ka", "in": "ni", "near": "vey", "from": "dor", "behind": "tav", "with": "sul"}
FUNCTION = {"the": "lo", "a": "un", "an": "un", "this": "es", "every": "ol", "two": "dui",
            "three": "tri", "some": "sem", "many": "mol", "and": "e", "but": "ma"}
TIMES = {"past": {"yesterday": "ierva", "last winter": "nivar pesut",
                  "two days ago": "dui dias ret"},
         "present": {"today": "hoda", "every morning": "ol matin", "now": "nunc"},
         "future": {"tomorrow": "mana", "next spring": "vera nov", "soon": "tost"}}
SUFFIX = {"noun": "o", "plural": "oi", "adj": "i", "past": "ut", "present": "an", "future": "ir"}
_ROTATE = str.maketrans("aeiou", "eioua")


def stem(word: str) -> str:
    """Veltish stem of any English word: letters reversed, vowels rotated (a->e->i->o->u->a)."""
    return word.lower()[::-1].translate(_ROTATE)


def _np(rng: random.Random, *, agent: bool) -> dict:
    if agent and rng.random() < 0.3:
        return {"name": f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}", "plural": False}
    if agent:
        noun = rng.choice(AGENTS)
    else:
        noun = rng.choice(THINGS) if rng.random() < 0.85 else (rng.choice(RARE_WORDS),)
    plural = rng.random() < 0.3
    dets = ("the", "two", "three", "some", "many") if plural else ("the", "a", "this", "every")
    det = rng.choice(dets)
    adj = rng.choice(ADJECTIVES) if rng.random() < 0.6 else None
    return {"det": det, "adj": adj, "noun": noun[0], "plural_form": noun[1] if len(noun) > 1
            else noun[0] + "s", "plural": plural}


def _np_en(np: dict) -> str:
    if "name" in np:
        return np["name"]
    words = [w for w in (np["adj"], np["plural_form"] if np["plural"] else np["noun"]) if w]
    det = a_an(words[0]) if np["det"] == "a" else np["det"]
    return " ".join([det, *words])


def _np_vt(np: dict) -> str:
    if "name" in np:
        return np["name"]
    number = "plural" if np["plural"] else "noun"
    out = [FUNCTION[np["det"]], stem(np["noun"]) + "-" + SUFFIX[number]]
    if np["adj"]:
        out.append(stem(np["adj"]) + "-" + SUFFIX["adj"])
    return " ".join(out)


def _clause(rng: random.Random, tense: str) -> dict:
    pp = None
    if rng.random() < 0.6:
        prep = rng.choice(list(PREPS))
        place = {"name": rng.choice(CITIES), "plural": False} if prep in ("in", "from") and \
            rng.random() < 0.5 else _np(rng, agent=False)
        pp = (prep, place)
    return {"subj": _np(rng, agent=True), "verb": rng.choice(VERBS), "tense": tense,
            "obj": _np(rng, agent=False), "pp": pp}


def _clause_en(c: dict) -> str:
    base, past, third = c["verb"]
    verb = {"past": past, "future": "will " + base,
            "present": base if c["subj"]["plural"] else third}[c["tense"]]
    words = [_np_en(c["subj"]), verb, _np_en(c["obj"])]
    if c["pp"]:
        words += [c["pp"][0], _np_en(c["pp"][1])]
    return " ".join(words)


def _clause_vt(c: dict) -> str:
    verb = stem(c["verb"][0]) + "-" + SUFFIX[c["tense"]]
    words = [_np_vt(c["subj"]), _np_vt(c["obj"]), "ke", verb]
    if c["pp"]:
        words += [_np_vt(c["pp"][1]), PREPS[c["pp"][0]]]
    return " ".join(words)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _make(rng: random.Random) -> tuple[str, str, str, dict]:
    tense = rng.choice(list(TIMES))
    time = rng.choice(list(TIMES[tense])) if rng.random() < 0.7 else None
    clauses = [_clause(rng, tense)]
    conj = rng.choice(("and", "but")) if rng.random() < 0.4 else None
    if conj:
        clauses.append(_clause(rng, tense))
    en = f" {conj} ".join(_clause_en(c) for c in clauses)
    vt = f" {FUNCTION[conj or 'and']} ".join(_clause_vt(c) for c in clauses)
    if time:
        en = f"{_cap(time)}, {en}" if rng.random() < 0.5 else f"{en} {time}"
        vt = f"{TIMES[tense][time]}, {vt}"
    prompt = f"English: {_cap(en)}.\nVeltish:"
    answer = _cap(vt) + "."
    return prompt, " " + answer, answer, {"tense": tense, "clauses": len(clauses)}


@register_task("translate")
class Translate(TextTask):
    answer_extractor = "first_line"  # answer = first line of the generation, stripped
    eval_splits = {"test": "test"}  # audited on test only: no ood or robustness variants
    make = staticmethod(_make)
