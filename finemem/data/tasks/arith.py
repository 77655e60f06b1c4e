"""`arith`: multi-step arithmetic word problems with chain-of-thought solutions.

Usage:
    from finemem.data.tasks import get_task
    train = get_task("arith").generate("train", n=500, seed=0)

A problem is a small story ("Mira has 7 quills. Mira finds 5 more quills. ...") whose answer is
reached by a chain of additions and subtractions (every value <= 30, so each number is a single
token). The solution ("format F") is chain-of-thought text ending in a line `#### <answer>`.

Each problem admits many correct solutions; one is drawn per example:
- an opening sentence and a closing sentence, and a connector / subject / verb in every step,
  are free choices, each from a fixed list of single-word options (so every phrasing of a step
  has the same length and the values sit at fixed offsets: a value is always copied from the
  same relative position, whatever the phrasing);
- `pair` problems (two people, then a total) have a free step order.
The value-carrying part of each step is always `<prev> <op> <amount> = <value>.`

Over-memorization (the first paper of ../shared/papers) appears when the model becomes sure of
the phrasing it saw for each training problem: other, equally correct phrasings of the test
references then get low probability (test PPL rises) while the arithmetic stays right.

Families: fine-tuning splits are family "A" (a person and their things). The pretraining corpus
(`pretrain_texts`) holds family-A problems in a *terse* format (equations only, no `####`) and
family-B problems (containers) in format F, so a base model knows format F and the A stories,
but has never written format F for an A story: fine-tuning has something to learn.

Disjointness: a problem's key (its numbers, names, item and templates, not its phrasing) is
hashed into 1000 buckets; each split owns a bucket range. `ood` uses held-out event templates
and more steps, and is disjoint by construction.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import ClassVar

from finemem.data.example import Example
from finemem.data.tasks import Task, register_task

CORPUS_VERSION = 1  # bump when anything below changes the generated text

NAMES = ("Mira", "Tobin", "Ines", "Osric", "Yara", "Bram", "Lena", "Caius", "Noor", "Ezra",
         "Pia", "Anders", "Sol", "Mabel", "Idris", "Wren", "Kofi", "Hedda", "Rafe", "Juno",
         "Tamsin", "Lior", "Odile", "Vasco", "Zelda", "Emeric", "Nadia", "Piet", "Greta", "Hugo",
         "Aurel", "Dagny", "Fenna", "Ivo", "Liesl", "Milo", "Orla", "Quill", "Sven", "Thea")
ITEMS = ("quills", "pebbles", "acorns", "marbles", "buttons", "ribbons", "feathers", "beads",
         "stamps", "shells", "bobbins", "cowries", "thimbles", "quinces", "gimlets", "ferrules",
         "tesserae", "spindles", "lanterns", "kumquats", "sprockets", "tokens", "walnuts", "figs")
CONTAINERS = ("jar", "box", "basket", "crate", "tin", "bag", "drawer", "chest")
# Event templates of family A: (sign, text). {a} amount, {i} item, {k} a helper's name.
GAINS = ("finds {a} more {i}", "buys {a} {i}", "gets {a} {i} from {k}", "picks up {a} {i}",
         "is given {a} {i}", "makes {a} {i}")
LOSSES = ("gives {a} {i} to {k}", "loses {a} {i}", "sells {a} {i}", "drops {a} {i}",
          "trades {a} {i} to {k}", "uses {a} {i}")
OOD_GAINS = ("wins {a} {i} at the fair", "collects {a} {i}")  # held out of train and pretraining
OOD_LOSSES = ("hands {a} {i} over to {k}", "throws away {a} {i}")
B_GAINS = ("puts {a} more {i} in the {c}", "adds {a} {i} to the {c}")
B_LOSSES = ("takes {a} {i} out of the {c}", "removes {a} {i} from the {c}")

# Format F phrasing slots: every option is one word, so all phrasings have the same shape.
OPEN_ADV = ("Okay", "Right", "Sure", "Well", "Now", "Good", "Fine", "Alright")
OPEN_VERB = ("count", "track", "follow", "trace", "tally", "check")
OPEN_NOUN = ("items", "story", "steps", "changes", "numbers", "events")
CONN = ("Then", "Next", "After", "Later", "Here", "Also")
SUBJ = ("we", "they", "you", "one")
VERB_PLUS = ("add", "gain", "get", "join")
VERB_MINUS = ("remove", "lose", "drop", "cut")
VERB_SUM = ("sum", "pool", "merge", "combine")
CLOSE_ADV = ("So", "Thus", "Hence", "Finally", "Overall", "Therefore")
CLOSE_NOUN = ("answer", "total", "result", "count")

PREAMBLES = ("It was a quiet morning in the village.", "The market opened early that day.",
             "Rain had fallen all night before this.", "The old clock in the hall ticked slowly.",
             "Everyone in the street knew each other well.", "The summer had been long and warm.")
DISTRACTORS = ("{k} is {d} years old.", "The shop is {d} minutes away.",
               "{k} has {d} cousins.", "The bus comes every {d} minutes.")
REWORDED_CHAIN = ("What is the number of {i} that {n} has at the end?",
                  "After all this, how many {i} are left with {n}?")
REWORDED_PAIR = ("What is the total number of {i} that {n} and {m} have?",
                 "Counting both of them, how many {i} do {n} and {m} have?")

# Hash buckets (of 1000) owned by each split; ood is disjoint by its templates.
BUCKETS = {"pretrain": (0, 500), "train": (500, 750), "test": (750, 875), "heldout": (875, 1000)}
VARIANTS = ("test_preamble", "test_distractor", "test_renamed", "test_reworded")


@dataclass(frozen=True)
class Problem:
    """One problem, independent of how its solution is phrased."""

    family: str  # "A" (fine-tuning) or "B" (pretraining only)
    kind: str  # "chain" (one running value) or "pair" (two values, then their total)
    names: tuple[str, ...]  # (subject, [second subject,] helper)
    item: str
    container: str
    starts: tuple[int, ...]  # one start for chain, two for pair
    events: tuple[tuple[int, int, str], ...]  # (owner index, signed amount, template)

    def key(self) -> str:
        return repr((self.family, self.kind, self.names, self.item, self.container, self.starts,
                     self.events))

    def bucket(self) -> int:
        return int.from_bytes(hashlib.blake2b(self.key().encode(), digest_size=8).digest(),
                              "big") % 1000

    def steps(self, order: tuple[int, ...] | None = None) -> list[tuple[int, int, int]]:
        """(prev, signed amount, value) per step; pair problems add a final (v1, v2, total)."""
        if self.kind == "chain":
            out, v = [], self.starts[0]
            for _, a, _ in self.events:
                out.append((v, a, v + a))
                v += a
            return out
        vals = [s + a for s, (_, a, _) in zip(self.starts, self.events)]
        order = order or (0, 1)
        out = [(self.starts[j], self.events[j][1], vals[j]) for j in order]
        out.append((vals[order[0]], vals[order[1]], sum(vals)))
        return out

    def answer(self) -> int:
        return self.steps()[-1][2]


@register_task("arith")
class ArithTask(Task):
    """Arithmetic word problems; see the module docstring. Options are for experiments."""

    splits: ClassVar[tuple[str, ...]] = ("train", "test", "ood", "heldout") + VARIANTS
    answer_extractor: ClassVar[str | None] = "hash"
    eval_splits: ClassVar[dict[str, str]] = {"test": "test", "ood": "ood",
                                             **{v: "variant" for v in VARIANTS}}

    def __init__(self, *, max_value: int = 30, pair_frac: float = 0.3,
                 events: tuple[int, int] = (2, 3), ood_events: tuple[int, int] = (4, 5),
                 drill_frac: float = 0.15):
        self.max_value = max_value
        self.drill_frac = drill_frac
        self.pair_frac = pair_frac
        self.events = events
        self.ood_events = ood_events

    def spec(self) -> dict:
        """Everything that determines the generated text (for cache keys)."""
        return {"version": CORPUS_VERSION, "max_value": self.max_value,
                "pair_frac": self.pair_frac, "events": list(self.events),
                "ood_events": list(self.ood_events), "drill_frac": self.drill_frac}

    # ---------------------------------------------------------------- public API
    def generate(self, split: str, n: int, seed: int = 0) -> list[Example]:
        self.check_split(split)
        base = "test" if split in VARIANTS else split
        out = [self._example(base, p, random.Random(f"phr|{base}|{seed}|{i}"), i)
               for i, p in enumerate(self._problems(base, n, seed))]
        if split in VARIANTS:  # same problems and references as `test`, perturbed prompts
            out = [self._variant(split, p, ex, seed, i)
                   for i, (p, ex) in enumerate(zip(self._problems(base, n, seed), out))]
        return out

    def pretrain_texts(self, n: int, seed: int = 0) -> list[str]:
        """Problems (half family A with terse solutions, half family B in format F), and a
        `drill_frac` share of arithmetic drills (chains of equations, for the number facts)."""
        is_drill = [random.Random(f"pre-kind|{seed}|{i}").random() < self.drill_frac
                    for i in range(n)]
        problems = iter(self._problems("pretrain", n - sum(is_drill), seed))
        texts = []
        for i, drill in enumerate(is_drill):
            rng = random.Random(f"pre-phr|{seed}|{i}")
            if drill:
                texts.append(drill_text(rng, max_value=self.max_value))
                continue
            p = next(problems)
            sol = terse_solution(p, rng) if p.family == "A" else solution(p, rng)
            texts.append(_prompt(render_question(p)) + sol)
        return texts

    # ---------------------------------------------------------------- problems
    def _problems(self, split: str, n: int, seed: int) -> list[Problem]:
        out: list[Problem] = []
        seen: set[str] = set()
        i = attempt = 0
        while len(out) < n:
            rng = random.Random(f"prob|{split}|{seed}|{i}|{attempt}")
            family = "B" if split == "pretrain" and rng.random() < 0.5 else "A"
            p = self.sample_problem(rng, family=family, ood=split == "ood")
            lo, hi = BUCKETS.get(split, (0, 1000))
            if lo <= p.bucket() < hi and p.key() not in seen:
                seen.add(p.key())
                out.append(p)
                i, attempt = i + 1, 0
            else:
                attempt += 1
        return out

    def sample_problem(self, rng: random.Random, *, family: str = "A",
                       ood: bool = False) -> Problem:
        """Draw one problem; every intermediate value stays within [0, max_value]."""
        gains, losses = (OOD_GAINS, OOD_LOSSES) if ood else (GAINS, LOSSES)
        if family == "B":
            gains, losses = B_GAINS, B_LOSSES
        kind = "pair" if rng.random() < self.pair_frac else "chain"
        names = tuple(rng.sample(NAMES, 3 if kind == "pair" else 2))
        item, container = rng.choice(ITEMS), rng.choice(CONTAINERS)
        if kind == "chain":
            lo, hi = self.ood_events if ood else self.events
            v = rng.randint(2, 20)
            starts, events = (v,), []
            for _ in range(rng.randint(lo, hi)):
                a = rng.randint(2, 9)
                plus = rng.random() < 0.5
                if v + a > self.max_value:
                    plus = False
                elif v - a < 0:
                    plus = True
                sign = 1 if plus else -1
                events.append((0, sign * a, rng.choice(gains if plus else losses)))
                v += sign * a
            return Problem(family, kind, names, item, container, starts, tuple(events))
        while True:
            starts = (rng.randint(2, 15), rng.randint(2, 15))
            events = []
            for j, s in enumerate(starts):
                a = rng.randint(2, 9)
                plus = s - a < 0 or rng.random() < 0.5
                events.append((j, a if plus else -a, rng.choice(gains if plus else losses)))
            if sum(s + e[1] for s, e in zip(starts, events)) <= self.max_value:
                return Problem(family, kind, names, item, container, starts, tuple(events))

    # ---------------------------------------------------------------- examples
    def _example(self, split: str, p: Problem, rng: random.Random, i: int,
                 prompt: str | None = None) -> Example:
        order = (0, 1)
        if p.kind == "pair" and rng.random() < 0.5:
            order = (1, 0)
        completion = solution(p, rng, order=order)
        meta = {"family": p.family, "kind": p.kind, "names": list(p.names), "item": p.item,
                "starts": list(p.starts), "amounts": [e[1] for e in p.events],
                "order": list(order), "n_steps": len(p.steps(order))}
        return Example(prompt=prompt or _prompt(render_question(p)), completion=completion,
                       answer=str(p.answer()), id=f"arith-{split}-{i}", meta=meta)

    def _variant(self, split: str, p: Problem, ex: Example, seed: int, i: int) -> Example:
        rng = random.Random(f"var|{split}|{seed}|{i}")
        if split == "test_renamed":
            while True:  # new names, and stay in the test bucket so no train prompt can match
                q = Problem(p.family, p.kind, tuple(rng.sample(
                    [m for m in NAMES if m not in p.names], len(p.names))), p.item, p.container,
                    p.starts, p.events)
                if q.bucket() in range(*BUCKETS["test"]):
                    break
            question, p = render_question(q), q
        else:
            question = render_question(p, reworded=rng if split == "test_reworded" else None)
            if split == "test_preamble":
                question = f"{rng.choice(PREAMBLES)} {question}"
            elif split == "test_distractor":
                first, rest = question.split(". ", 1)
                k = rng.choice([m for m in NAMES if m not in p.names])
                extra = rng.choice(DISTRACTORS).format(k=k, d=rng.randint(2, 30))
                question = f"{first}. {extra} {rest}"
        meta = dict(ex.meta, names=list(p.names), variant=split.removeprefix("test_"))
        return Example(prompt=_prompt(question), completion=ex.completion, answer=ex.answer,
                       id=f"arith-{split}-{i}", meta=meta)


def _prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def render_question(p: Problem, *, reworded: random.Random | None = None) -> str:
    """The question text of a problem (reworded: draw an alternative question sentence)."""
    n, c = p.names[0], p.container
    helper = p.names[-1]
    if p.family == "B":
        if p.kind == "chain":
            parts = [f"A {c} holds {p.starts[0]} {p.item}."]
            parts += [f"{n} {_fmt(t, e, p.item, helper, c)}." for _, e, t in p.events]
            parts.append(f"How many {p.item} are in the {c} now?")
        else:
            c2 = CONTAINERS[(CONTAINERS.index(c) + 1) % len(CONTAINERS)]
            parts = [f"A {c} holds {p.starts[0]} {p.item} and a {c2} holds {p.starts[1]} "
                     f"{p.item}."]
            parts += [f"{n} {_fmt(t, e, p.item, helper, (c, c2)[j])}." for j, e, t in p.events]
            parts.append(f"How many {p.item} are in the {c} and the {c2} together?")
        return " ".join(parts)
    if p.kind == "chain":
        parts = [f"{n} has {p.starts[0]} {p.item}."]
        parts += [f"{n} {_fmt(t, e, p.item, helper, c)}." for _, e, t in p.events]
        q = (reworded.choice(REWORDED_CHAIN) if reworded else
             "How many {i} does {n} have now?")
        parts.append(q.format(i=p.item, n=n))
        return " ".join(parts)
    m = p.names[1]
    parts = [f"{n} has {p.starts[0]} {p.item} and {m} has {p.starts[1]} {p.item}."]
    parts += [f"{(n, m)[j]} {_fmt(t, e, p.item, helper, c)}." for j, e, t in p.events]
    q = (reworded.choice(REWORDED_PAIR) if reworded else
         "How many {i} do {n} and {m} have together?")
    parts.append(q.format(i=p.item, n=n, m=m))
    return " ".join(parts)


def _fmt(template: str, signed: int, item: str, helper: str, container: str) -> str:
    return template.format(a=abs(signed), i=item, k=helper, c=container)


def _eq(prev: int, signed: int, value: int) -> str:
    return f"{prev} {'+' if signed >= 0 else '-'} {abs(signed)} = {value}."


def solution(p: Problem, rng: random.Random, *, order: tuple[int, ...] = (0, 1)) -> str:
    """Format F: opening, one line per step, closing, `#### answer`. Phrasing drawn from rng."""
    lines = [f" {rng.choice(OPEN_ADV)}, we {rng.choice(OPEN_VERB)} the {rng.choice(OPEN_NOUN)}."]
    steps = p.steps(order)
    for j, (prev, a, v) in enumerate(steps):
        if p.kind == "pair" and j == len(steps) - 1:
            verb = rng.choice(VERB_SUM)
        else:
            verb = rng.choice(VERB_PLUS if a >= 0 else VERB_MINUS)
        lines.append(f"{rng.choice(CONN)}, {rng.choice(SUBJ)} {verb}: {_eq(prev, a, v)}")
    ans = p.answer()
    lines.append(f"{rng.choice(CLOSE_ADV)}, the {rng.choice(CLOSE_NOUN)} is {ans}.")
    lines.append(f"#### {ans}")
    return "\n".join(lines)


def terse_solution(p: Problem, rng: random.Random) -> str:
    """Equations only, no `####` line (the pretraining format of family A)."""
    order = (1, 0) if p.kind == "pair" and rng.random() < 0.5 else (0, 1)
    return " " + " ".join(_eq(*s) for s in p.steps(order)) + f" The result is {p.answer()}."


def drill_text(rng: random.Random, *, max_value: int = 30, n_eq: int = 16) -> str:
    """Arithmetic practice: a running chain (copy the last value, add or subtract 2..9), or
    sums of two values (the last step of `pair` problems)."""
    eqs = []
    if rng.random() < 0.6:
        v = rng.randint(0, max_value)
        for _ in range(n_eq):
            a = rng.randint(2, 9)
            sign = 1 if v - a < 0 or (v + a <= max_value and rng.random() < 0.5) else -1
            eqs.append(_eq(v, sign * a, v + sign * a))
            v += sign * a
    else:
        for _ in range(n_eq):
            x = rng.randint(0, max_value)
            y = rng.randint(0, max_value - x)
            eqs.append(_eq(x, y, x + y))
    return "Practice: " + " ".join(eqs)
