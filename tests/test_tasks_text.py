"""Tests for paper 2's text tasks (summarize, dialog, qa, translate, sentiment) and lexicon."""

from __future__ import annotations

import re
import statistics

import pytest

from finemem.data.tasks import get_task, task_names
from finemem.data.tasks import lexicon as lx
from finemem.data.tasks import translate as tr
from finemem.errors import UserError

TEXT_TASKS = ("summarize", "dialog", "qa", "translate", "sentiment")
N = 300


@pytest.fixture(scope="module")
def data():
    """{task: {split: examples}} with N examples per split, plus N pretraining texts."""
    out = {}
    for name in TEXT_TASKS:
        task = get_task(name)
        out[name] = {s: task.generate(s, N, seed=0) for s in task.splits}
        out[name]["pretrain"] = task.pretrain_texts(N, seed=0)
    return out


def _words(texts):
    return statistics.mean(len(t.split()) for t in texts)


def test_registered():
    assert set(TEXT_TASKS) <= set(task_names())


def test_registry_typo_suggests_fix():
    with pytest.raises(UserError, match="Did you mean: summarize"):
        get_task("summarise")


@pytest.mark.parametrize("name", TEXT_TASKS)
def test_deterministic_and_seeded(name):
    task = get_task(name)
    a = [e.to_dict() for e in task.generate("train", 20, seed=0)]
    b = [e.to_dict() for e in task.generate("train", 20, seed=0)]
    c = [e.to_dict() for e in task.generate("train", 20, seed=1)]
    assert a == b
    assert sum(x["prompt"] != y["prompt"] for x, y in zip(a, c)) >= 18
    assert task.pretrain_texts(5, seed=0) == task.pretrain_texts(5, seed=0)
    assert task.pretrain_texts(5, seed=0) != task.pretrain_texts(5, seed=1)


@pytest.mark.parametrize("name", TEXT_TASKS)
def test_prefix_stable_and_ids(name):
    task = get_task(name)
    big, small = task.generate("test", 30, seed=3), task.generate("test", 10, seed=3)
    assert [e.to_dict() for e in big[:10]] == [e.to_dict() for e in small]
    assert [e.id for e in small] == [f"{name}-test-{i}" for i in range(10)]
    assert task.pretrain_texts(12, seed=2)[:4] == task.pretrain_texts(4, seed=2)
    assert task.generate("heldout", 0) == []
    with pytest.raises(UserError, match="available: train, test, heldout"):
        task.generate("validation", 3)


@pytest.mark.parametrize("name", TEXT_TASKS)
def test_splits_disjoint_and_unique(name, data):
    d = data[name]
    prompts = {s: [e.prompt for e in d[s]] for s in ("train", "test", "heldout")}
    for s, ps in prompts.items():
        assert len(set(ps)) == len(ps), f"duplicate prompt within {s}"
        assert all(lx.split_of_prompt(p) == s for p in ps)
    assert not set(prompts["train"]) & set(prompts["test"])
    assert not set(prompts["train"]) & set(prompts["heldout"])
    assert not set(prompts["test"]) & set(prompts["heldout"])
    # Structural: holds across seeds too.
    other = {e.prompt for e in get_task(name).generate("test", 100, seed=7)}
    assert not other & set(prompts["train"])
    every = [p for ps in prompts.values() for p in ps]
    pretrain = d["pretrain"] + get_task(name).pretrain_texts(50, seed=9)
    assert len(set(d["pretrain"])) == N
    assert not any(t.startswith(p) for t in pretrain for p in every)


@pytest.mark.parametrize("name", TEXT_TASKS)
def test_text_format(name, data):
    for split in ("train", "test", "heldout"):
        for e in data[name][split]:
            assert e.prompt.isascii() and e.completion.isascii()
            assert e.prompt.endswith(":") and e.completion.startswith(" ")
            assert not e.completion.startswith("  ") and e.completion == e.completion.rstrip()
            assert "<|endoftext|>" not in e.completion and "</s>" not in e.completion
    for t in data[name]["pretrain"]:
        assert t.isascii()


# Documented mean output lengths in words (module docstrings).
OUTPUT_RANGES = {"summarize": (40, 70), "dialog": (80, 150), "qa": (1, 4), "translate": (8, 25),
                 "sentiment": (1, 1)}
INPUT_RANGES = {"summarize": (150, 250), "dialog": (50, 100), "qa": (60, 110),
                "translate": (8, 25), "sentiment": (60, 120)}


@pytest.mark.parametrize("name", TEXT_TASKS)
def test_length_ranges(name, data):
    exs = data[name]["train"]
    lo, hi = OUTPUT_RANGES[name]
    assert lo <= _words(e.completion for e in exs) <= hi
    lo, hi = INPUT_RANGES[name]
    assert lo <= _words(e.prompt for e in exs) <= hi


def test_long_tasks_longer_than_short_ones(data):
    mean = {n: _words(e.completion for e in data[n]["train"]) for n in TEXT_TASKS}
    assert min(mean["summarize"], mean["dialog"]) > 10 * max(mean["qa"], mean["sentiment"])
    assert mean["dialog"] > mean["summarize"]


def test_qa_answer_is_span_of_context(data):
    for e in data["qa"]["train"] + data["qa"]["heldout"]:
        context = e.prompt.split("\nQuestion:")[0]
        assert e.completion == " " + e.answer
        assert e.answer in context
    qtypes = {e.meta["qtype"] for e in data["qa"]["train"]}
    assert qtypes == {"who", "year", "where", "color", "nickname", "origin", "photos", "measure"}


def test_translate_hand_computed():
    assert tr.stem("basket") == "tikseb" and tr.stem("carry") == "yrrec" and tr.stem("Old") == "dlu"
    noun = {"det": "the", "adj": "old", "noun": "farmer", "plural_form": "farmers", "plural": False}
    obj = {"det": "a", "adj": "heavy", "noun": "basket", "plural_form": "baskets", "plural": False}
    place = {"det": "the", "adj": None, "noun": "market", "plural_form": "markets", "plural": True}
    clause = {"subj": noun, "verb": ("carry", "carried", "carries"), "tense": "past", "obj": obj,
              "pp": ("to", place)}
    assert tr._clause_en(clause) == "the old farmer carried a heavy basket to the markets"
    assert tr._clause_vt(clause) == ("lo rimref-o dlu-i un tikseb-o yveih-i ke yrrec-ut "
                                     "lo tikrem-oi ka")
    clause["tense"] = "present"
    assert tr._clause_en(clause).startswith("the old farmer carries a heavy")


def test_translate_is_a_function_of_the_source(data):
    seen = {}
    for split in ("train", "test", "heldout"):
        for e in data["translate"][split]:
            src = e.prompt[len("English: "):-len("\nVeltish:")]
            assert e.completion == " " + e.answer
            assert seen.setdefault(src, e.answer) == e.answer
    # Time phrase before or after the clause: same translation.
    starts = [e for e in data["translate"]["train"] if e.prompt.startswith("English: Yesterday, ")]
    ends = [e for e in data["translate"]["train"] if e.prompt.endswith(" yesterday.\nVeltish:")]
    assert starts and ends
    assert all(e.answer.startswith("Ierva, ") for e in starts + ends)
    # Names are kept, unknown words go through the same rule.
    for e in data["translate"]["train"]:
        for name in re.findall(r"\b(?:%s) [A-Z][a-z]+" % "|".join(lx.FIRST_NAMES), e.prompt):
            assert name in e.answer


def test_summarize_facts_and_phrasings(data):
    exs = data["summarize"]["train"]
    assert {e.meta["phrasing"] for e in exs} == {0, 1, 2, 3}
    assert len({e.completion.split()[0] for e in exs}) >= 3
    for e in exs:
        f = e.meta["facts"]
        body = e.prompt.lower()
        for key in ("who", "city", "rare", "n", "day", "month", "quoter"):
            assert f[key].lower() in body
        for text in [e.completion, *e.meta["alternatives"]]:
            for key in ("who", "city", "n", "day", "month", "quoter"):
                assert f[key] in text
        assert len(set([e.completion, *e.meta["alternatives"]])) == 4


def test_dialog_facts_and_phrasings(data):
    exs = data["dialog"]["train"]
    for e in exs:
        f = e.meta["facts"]
        assert f"My name is {f['first']} and I am a {f['age']}-year-old" in e.prompt
        assert f["first"] in e.completion.split(".")[0]
        assert e.prompt.endswith("What should I do?\nDoctor:")
        assert e.meta["alternatives"] and e.completion not in e.meta["alternatives"]
    assert len({" ".join(e.completion.split()[:2]) for e in exs}) >= 4
    greetings = {re.sub(r"\b[A-Z][a-z]+\b", "X", e.completion.split(".")[0]) for e in exs}
    assert len(greetings) >= 3


def test_qa_and_sentiment_phrasings(data):
    who = {re.sub(r"the \w+\?$", "the X?", e.prompt.split("\nQuestion: ")[1])
           for e in data["qa"]["train"] if e.meta["qtype"] == "who"}
    assert len(who) >= 2
    exs = data["sentiment"]["train"]
    labels = [e.answer for e in exs]
    assert set(labels) == {"positive", "negative"}
    assert 0.4 < labels.count("positive") / len(exs) < 0.6
    assert all(e.completion == " " + e.answer for e in exs)
    verdicts = {e.prompt.split(". ")[-1] for e in exs}
    assert len(verdicts) >= 6
    assert all(e.meta["disagreeing"] >= 1 for e in exs)  # every review has mixed cues


@pytest.mark.parametrize("name", TEXT_TASKS)
def test_a_thousand_examples_generate(name):
    # Timing lives in benchmarks, not unit tests; this only checks a realistic size works.
    exs = get_task(name).generate("train", 1000, seed=0)
    assert len(exs) == 1000 and len({e.id for e in exs}) == 1000


def test_lexicon_helpers():
    assert lx.a_an("old") == "an" and lx.a_an("heavy") == "a"
    assert lx.join_and(["x"]) == "x" and lx.join_and(["x", "y", "z"]) == "x, y and z"
    assert lx.number_text(7) == "seven" and lx.number_text(1234) == "1,234"
    assert lx.rng_for("t", "train", 5).random() == lx.rng_for("t", "train", 5).random()
    assert lx.rng_for("t", "train", 5).random() != lx.rng_for("t", "test", 5).random()
    word = lx.coin_word(lx.rng_for("t", "train", 0), suffix="ite")
    assert word.isascii() and word.islower() and word.endswith("ite")
    for bank in (lx.FIRST_NAMES, lx.SURNAMES, lx.CITIES, lx.RARE_WORDS, lx.ADJECTIVES, lx.DRUGS):
        assert len(set(bank)) == len(bank) and all(w.isascii() for w in bank)
    shares = [lx.split_of_prompt(f"prompt {i}") for i in range(4000)]
    assert all(850 < shares.count(p) < 1150 for p in lx.PARTITIONS)


def test_draw_split_errors():
    def constant(rng):
        return "same prompt", " x", None, {}

    part = lx.split_of_prompt("same prompt")
    assert len(lx.draw_split("t", part, 1, 0, constant)) == 1
    with pytest.raises(UserError, match="ran out of distinct prompts"):
        lx.draw_split("t", part, 2, 0, constant, max_attempts=5)
    with pytest.raises(UserError, match="unknown partition"):
        lx.draw_split("t", "dev", 1, 0, constant)
