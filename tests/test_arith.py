"""The `arith` task: determinism, disjoint splits, aligned variants, correct answers."""

import random
import re

import pytest

from finemem.data.tasks import get_task, task_names
from finemem.data.tasks.arith import (VARIANTS, ArithTask, Problem, render_question, solution,
                                      terse_solution)
from finemem.errors import UserError

TASK = get_task("arith")


def test_registered_with_hash_extractor():
    assert "arith" in task_names()
    assert isinstance(TASK, ArithTask)
    assert TASK.answer_extractor == "hash"


@pytest.mark.parametrize("split", ArithTask.splits)
def test_deterministic_and_prefix_stable(split):
    a = TASK.generate(split, 40, seed=3)
    b = TASK.generate(split, 40, seed=3)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert [e.to_dict() for e in TASK.generate(split, 15, seed=3)] == [e.to_dict() for e in a[:15]]
    assert [e.id for e in a[:3]] == [f"arith-{split}-{i}" for i in range(3)]
    assert [e.prompt for e in TASK.generate(split, 40, seed=4)] != [e.prompt for e in a]


def test_splits_and_pretraining_are_disjoint():
    prompts = {s: {e.prompt for e in TASK.generate(s, 400)} for s in ArithTask.splits}
    for s, ps in prompts.items():
        assert len(ps) == 400, f"duplicate prompts within {s}"
    for i, s in enumerate(ArithTask.splits):
        for t in ArithTask.splits[i + 1:]:
            assert not prompts[s] & prompts[t], (s, t)
    pretrain_prompts = {t.split("\nAnswer:")[0] + "\nAnswer:" for t in TASK.pretrain_texts(2000)}
    for s, ps in prompts.items():
        assert not pretrain_prompts & ps, s


def _answer_from_meta(meta):
    # chain: start + sum(amounts); pair: both starts + both amounts (the two totals summed)
    return sum(meta["starts"]) + sum(meta["amounts"])


@pytest.mark.parametrize("split", ArithTask.splits)
def test_hash_line_holds_the_recomputed_answer(split):
    for ex in TASK.generate(split, 200, seed=1):
        last = ex.completion.splitlines()[-1]
        assert last == f"#### {_answer_from_meta(ex.meta)}"
        assert ex.answer == str(_answer_from_meta(ex.meta))
        assert ex.prompt.endswith("\nAnswer:") and ex.completion.startswith(" ")
        assert "<|" not in ex.completion  # no special tokens such as EOS


@pytest.mark.parametrize("split", ArithTask.splits)
def test_every_equation_in_the_solution_is_true(split):
    for ex in TASK.generate(split, 100, seed=2):
        eqs = re.findall(r"(\d+) ([+-]) (\d+) = (\d+)\.", ex.completion)
        assert len(eqs) == ex.meta["n_steps"]
        for a, op, b, c in eqs:
            assert (int(a) + int(b) if op == "+" else int(a) - int(b)) == int(c)
            assert 0 <= int(c) <= 30


def test_variants_align_with_test():
    test = TASK.generate("test", 60)
    for v in VARIANTS:
        var = TASK.generate(v, 60)
        for t, e in zip(test, var):
            assert e.completion == t.completion and e.answer == t.answer
            assert e.prompt != t.prompt
            assert e.meta["starts"] == t.meta["starts"]
            assert e.meta["amounts"] == t.meta["amounts"]
            if v == "test_preamble":
                assert e.prompt.endswith(t.prompt.removeprefix("Question: "))
            if v == "test_renamed":
                assert not set(e.meta["names"]) & set(t.meta["names"])


def test_ood_has_more_steps_than_test():
    ood = TASK.generate("ood", 100)
    test = TASK.generate("test", 100)
    assert min(e.meta["n_steps"] for e in ood if e.meta["kind"] == "chain") >= 4
    assert max(e.meta["n_steps"] for e in test if e.meta["kind"] == "chain") <= 3


def test_solution_phrasings_differ_but_share_the_equations():
    rng = random.Random(0)
    p = TASK.sample_problem(rng)
    sols = {solution(p, random.Random(k)) for k in range(30)}
    assert len(sols) > 20
    eqs = {tuple(re.findall(r"\d+ [+-] \d+ = \d+", s)) for s in sols}
    assert len(eqs) == 1 or p.kind == "pair"  # pair problems also vary the step order


def test_hand_made_problem_renders_and_solves():
    p = Problem("A", "chain", ("Mira", "Tobin"), "quills", "jar", (7,),
                ((0, 5, "finds {a} more {i}"), (0, -3, "gives {a} {i} to {k}")))
    assert render_question(p) == ("Mira has 7 quills. Mira finds 5 more quills. Mira gives 3 "
                                  "quills to Tobin. How many quills does Mira have now?")
    assert p.answer() == 9
    assert terse_solution(p, random.Random(0)) == " 7 + 5 = 12. 12 - 3 = 9. The result is 9."
    sol = solution(p, random.Random(0)).splitlines()
    assert sol[1].endswith(": 7 + 5 = 12.") and sol[2].endswith(": 12 - 3 = 9.")
    assert sol[-1] == "#### 9"
    q = Problem("A", "pair", ("Mira", "Tobin", "Ines"), "quills", "jar", (4, 6),
                ((0, 2, "buys {a} {i}"), (1, -5, "loses {a} {i}")))
    assert q.answer() == 7
    assert q.steps((1, 0)) == [(6, -5, 1), (4, 2, 6), (1, 6, 7)]


def test_pretraining_mixes_terse_family_a_and_verbose_family_b():
    texts = TASK.pretrain_texts(200)
    assert len(texts) == 200 and texts == TASK.pretrain_texts(200)
    verbose = [t for t in texts if "\n#### " in t]
    assert 40 < len(verbose) < 160
    assert all(" holds " in t for t in verbose)  # format F only on family-B (container) stories


def test_unknown_split_is_a_user_error():
    with pytest.raises(UserError, match="no split 'dev'"):
        TASK.generate("dev", 3)


def test_drills_are_true_and_chained():
    from finemem.data.tasks.arith import drill_text

    for k in range(30):
        text = drill_text(random.Random(k), max_value=30, n_eq=12)
        eqs = re.findall(r"(\d+) ([+-]) (\d+) = (\d+)\.", text)
        assert len(eqs) == 12
        for a, op, b, c in eqs:
            assert (int(a) + int(b) if op == "+" else int(a) - int(b)) == int(c)
            assert 0 <= int(c) <= 30
    drills = [t for t in TASK.pretrain_texts(300) if t.startswith("Practice:")]
    assert 0 < len(drills) < 300
