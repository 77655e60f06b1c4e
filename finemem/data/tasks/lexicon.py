"""Word banks and seeded helpers shared by the built-in procedural tasks.

Usage:
    from finemem.data.tasks.lexicon import FIRST_NAMES, rng_for, draw_split
    rng = rng_for("qa", "train", index=7, seed=0)   # the same Random for example 7 at any n
    name = rng.choice(FIRST_NAMES)

Everything here is ASCII, fixed and seed-independent, so a task's data depend only on
(task, split, seed, index). The banks are public module constants: other tasks may import
them, so entries are only ever appended, never reordered or removed.

Disjoint splits: `split_of_prompt(prompt)` assigns every possible prompt to exactly one of
`PARTITIONS` by a stable hash, and `draw_split` keeps only the candidates whose prompt belongs
to the requested split (and that are new within it). Two splits can therefore never share a
prompt, whatever their seeds, and the pretraining stream ("pretrain") is disjoint from all of them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import ClassVar

from finemem.data.example import Example
from finemem.data.tasks import Task
from finemem.errors import UserError


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words("""
Ada Alma Amara Anika Ansel Aurel Bastian Beatrix Bram Calla Cassius Cora Dalia Darius Delphine
Desmond Edda Elio Elowen Emrys Esme Ezra Farah Felix Freya Gideon Greta Hallam Hana Idris Ilse
Imogen Ines Ivo Jasper Juno Kaia Kasimir Leander Lena Linus Lorcan Mabel Magnus Maren Milo Mira
Nadia Nils Noor Oona Orla Oskar Petra Quentin Rafael Rhea Rosalind Rowan Saoirse Silas Soren
Talia Tamsin Teodor Thea Ulla Uriel Vera Viggo Wren Xavier Yara Yusuf Zelda Zofia
""")

SURNAMES = _words("""
Abernathy Achterberg Albescu Ashdown Baptiste Barrowclough Belcastro Birkeland Blackwood Brannigan
Castellanos Chaudry Cobbold Dalgaard Delacroix Drummond Eckhart Ellingham Falconer Farnsworth
Fennimore Galloway Gerritsen Haddington Halvorsen Hargreave Ibarra Ingleby Jankowski Joubert
Kavanagh Kestrel Lachance Larkspur Lindqvist Mackintosh Marchetti Merriweather Nakashima Novak
Oyelaran Okonkwo Pemberton Quennell Radcliffe Rasmussen Sandoval Szabo Thistlewood Torvald
Underhill Valcourt Vasquez Wetherby Whitcombe Yamaguchi Yardley Zabrowski Zellweger
""")

CITIES = _words("""
Aldermoor Ashbury Bellhaven Blackridge Brindle Caldwick Carrow Dunmere Eastwick Elmsford Fairhollow
Fenwick Glenmarsh Greyhaven Harrowgate Hollins Ironvale Kestwick Kingsmere Larkhill Lowmoor
Marrowby Millbrook Northcott Oakhurst Pellston Quarrendon Ravensby Redcliff Rookhaven Saltmere
Silverdale Stonebridge Thornbury Tidewell Umberleigh Valemount Westerly Whitmoor Wyndham
""")

# Made-up nouns: words a base model has never seen, so reproducing one is a memorization signal.
RARE_WORDS = _words("""
zorvantite quellmoss brindlewort flumaric kestrelite vandrith oskarine pellucine thraxite mirrowax
glimmerfen sorvane tachylum ombrelite cinderweed halvorine lunebrac marquetine nimbrash orrowind
plaxite quarrelite ruddlestone sallowisp tindrel umbersol verdanite wyvernite xyloquin yarrowmere
zephrine auberlite belmoss corvanite drossel eldrith fernwick grisalt hollowren isenbrac jesperine
""")

ADJECTIVES = _words("""
ancient bright brittle calm cheerful clever cold crooked curious damp dark delicate dull eager
faint fierce fragile gentle glossy golden heavy hollow humble narrow noisy odd pale patient
polished proud quiet rapid rough rusty sharp shy silent slender smooth sturdy swift tall tiny
vivid warm wary weathered wild young
""")

COLORS = _words("amber azure crimson emerald grey indigo ivory ochre olive scarlet silver violet")

OCCUPATIONS = _words("""
archivist astronomer baker botanist carpenter chemist engineer farmer geologist historian
librarian mechanic nurse painter pharmacist photographer pilot potter surveyor teacher
""")

ORG_KINDS = _words("Institute Society Foundation Council Museum Laboratory Trust Guild Observatory")

MONTHS = _words("January February March April May June July August September October November "
                "December")
WEEKDAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")

NUMBER_WORDS = _words("""
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen twenty
""")

# Symptoms as (complaint phrase, body area, likely cause, useful test).
SYMPTOMS = (
    ("a dull headache", "head", "tension or eye strain", "an eye examination"),
    ("a dry cough", "chest", "an irritated airway", "a chest examination"),
    ("pain in my lower back", "back", "a muscle strain", "a physical examination of the spine"),
    ("heartburn after meals", "stomach", "acid reflux", "a trial of diet changes"),
    ("itchy red patches on my arms", "skin", "contact dermatitis", "a patch test"),
    ("trouble falling asleep", "sleep", "stress or irregular hours", "a sleep diary"),
    ("swelling in my left ankle", "ankle", "a mild sprain", "an X-ray of the ankle"),
    ("a sore throat", "throat", "a viral infection", "a throat swab"),
    ("dizziness when I stand up", "circulation", "low blood pressure", "a blood pressure check"),
    ("tingling in my fingers", "hands", "a pinched nerve", "a nerve conduction test"),
    ("constant tiredness", "energy", "low iron", "a full blood count"),
    ("ringing in my ears", "ears", "noise exposure", "a hearing test"),
    ("stiffness in my knees", "joints", "early arthritis", "a joint examination"),
    ("a blocked nose", "sinuses", "sinusitis", "a nasal examination"),
)

# Medicines: common real names plus made-up ones (rare tokens).
DRUGS = _words("""
ibuprofen paracetamol cetirizine omeprazole loratadine amoxicillin metformin naproxen
zelvoprine quintavex dormelin ostracane valpirex lumetrol
""")

PRODUCT_KINDS = _words("""
blender kettle backpack speaker toaster lamp keyboard umbrella tent camera vacuum thermos
""")

MOVIE_GENRES = _words("thriller comedy drama western musical documentary romance mystery")

FILLER_SENTENCES = (
    "The weather that week was mild, with light rain in the mornings.",
    "Local shops reported a busy weekend as visitors arrived from nearby towns.",
    "Several residents said they had followed the news closely.",
    "The town has a population of a little over twelve thousand people.",
    "Traffic on the main road was slower than usual for most of the day.",
    "A small crowd gathered outside the town hall in the afternoon.",
    "Officials did not say whether the schedule could change.",
    "The area is better known for its orchards and its old stone bridge.",
    "Photographs of the event were shared widely online.",
    "Some people questioned the cost, while others welcomed the attention.",
    "The local newspaper had first reported the plans earlier in the year.",
    "Volunteers helped to direct visitors and answer questions.",
)


def stable_hash(text: str) -> int:
    """64-bit hash of `text` that is the same on every machine and Python run (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def rng_for(task: str, split: str, index: int, seed: int = 0, attempt: int = 0) -> random.Random:
    """Independent `random.Random` for one example, from (task, split, seed, index, attempt).

    Because it depends on the index and not on how many examples are drawn, example i is the
    same whatever n is.
    """
    return random.Random(stable_hash(f"{task}|{split}|{seed}|{index}|{attempt}"))


PARTITIONS = ("train", "test", "heldout", "pretrain")


def split_of_prompt(prompt: str) -> str:
    """The one partition (see `PARTITIONS`) that owns `prompt`; a function of the text alone."""
    return PARTITIONS[stable_hash("partition|" + prompt) % len(PARTITIONS)]


MakeFn = Callable[[random.Random], tuple[str, str, "str | None", dict]]


def draw_split(task: str, split: str, n: int, seed: int, make: MakeFn, *,
               max_attempts: int = 200) -> list[Example]:
    """Draw `n` examples for `split` from `make(rng) -> (prompt, completion, answer, meta)`.

    Example i tries rngs `rng_for(task, split, i, seed, attempt)` for attempt = 0, 1, ... and
    keeps the first candidate whose prompt belongs to `split` (see `split_of_prompt`) and has
    not appeared earlier in this split. Example i depends only on examples 0..i-1, so the first
    k of n examples equal `draw_split(..., k, ...)`.
    """
    if split not in PARTITIONS:
        raise UserError(f"unknown partition '{split}'; use one of {', '.join(PARTITIONS)}",
                        field="split")
    if n < 0:
        raise UserError(f"n must be >= 0, got {n}", field="n")
    out: list[Example] = []
    seen: set[str] = set()
    for i in range(n):
        for attempt in range(max_attempts):
            prompt, completion, answer, meta = make(rng_for(task, split, i, seed, attempt))
            if prompt not in seen and split_of_prompt(prompt) == split:
                break
        else:
            raise UserError(f"task '{task}' ran out of distinct prompts for split '{split}' "
                            f"after {i} examples; ask for fewer examples", field="n")
        seen.add(prompt)
        out.append(Example(prompt=prompt, completion=completion, answer=answer,
                           id=f"{task}-{split}-{i}", meta=meta))
    return out


def pretrain_from(task: str, n: int, seed: int, make: MakeFn) -> list[str]:
    """Pretraining texts (prompt + completion) from the "pretrain" partition of `make`."""
    return [ex.prompt + ex.completion for ex in draw_split(task, "pretrain", n, seed, make)]


def pick(rng: random.Random, items: Sequence, k: int) -> list:
    """k distinct items of `items` in random order."""
    return rng.sample(list(items), k)


def full_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"


def a_an(word: str) -> str:
    """'a' or 'an' for `word`, by its first letter (good enough for this vocabulary)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def join_and(items: Sequence[str]) -> str:
    """'x', 'x and y', 'x, y and z'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def number_text(n: int) -> str:
    """Small numbers as words, larger ones as digits with thousands separators."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else f"{n:,}"


def coin_word(rng: random.Random, *, syllables: tuple[int, int] = (2, 3), suffix: str = "") -> str:
    """A fresh made-up word from syllables, e.g. 'velomarite' (lowercase ASCII)."""
    onsets = ("b", "br", "d", "dr", "f", "g", "gl", "k", "l", "m", "n", "p", "qu", "r", "s", "st",
              "t", "th", "v", "z")
    vowels = ("a", "e", "i", "o", "u", "ai", "ou")
    codas = ("", "", "n", "r", "l", "s", "x")
    word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                   for _ in range(rng.randint(*syllables)))
    return word + suffix


class TextTask(Task):
    """A free-text task drawn from one `make(rng)` function: train / test / heldout splits and
    pretraining texts all come from `draw_split`'s disjoint partitions."""

    splits: ClassVar[tuple[str, ...]] = ("train", "test", "heldout")
    make: ClassVar[MakeFn]

    def generate(self, split: str, n: int, seed: int = 0) -> list[Example]:
        self.check_split(split)
        return draw_split(self.name, split, n, seed, type(self).make)

    def pretrain_texts(self, n: int, seed: int = 0) -> list[str]:
        return pretrain_from(self.name, n, seed, type(self).make)
