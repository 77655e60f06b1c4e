import math

import pytest

from finemem.metrics.answers import (answer_accuracy, answers_match, extract_answer,
                                     normalize_answer)


@pytest.mark.parametrize("text, expected", [
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("#### 5\nthen more\n#### 1,000  \n", "1,000"),    # the last '####' line wins
    ("no marker 42", None),
    ("####   \n", None),                               # marker with nothing after it
])
def test_extract_hash(text, expected):
    assert extract_answer(text, method="hash") == expected


@pytest.mark.parametrize("text, expected", [
    ("3 apples and 4 pears make 7.", "7"),
    ("It costs $1,250.50 in total", "1,250.50"),
    ("temperature -3.5 degrees", "-3.5"),
    ("the list 1,2,3", "3"),                  # not a grouped thousand
    ("about .5 of it", ".5"),
    ("no digits here", None),
])
def test_extract_last_number(text, expected):
    assert extract_answer(text, method="last_number") == expected


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{42}.", "42"),
    (r"\boxed{1} then \boxed{\frac{a}{b+{c}}}", r"\frac{a}{b+{c}}"),
    (r"\boxed{7} and a cut-off \boxed{\frac{1", "7"),   # unbalanced last one: earlier one
    ("no box", None),
])
def test_extract_boxed(text, expected):
    assert extract_answer(text, method="boxed") == expected


def test_extract_regex_group_or_whole_match():
    text = "answer: 3. Final answer: 12"
    assert extract_answer(text, method="regex", pattern=r"answer: (\d+)") == "12"
    assert extract_answer(text, method="regex", pattern=r"\d+") == "12"
    assert extract_answer(text, method="regex", pattern=r"(zzz)") is None


def test_extract_errors_tell_the_fix():
    with pytest.raises(ValueError, match="needs a pattern"):
        extract_answer("x", method="regex")
    with pytest.raises(ValueError, match="invalid answer regex"):
        extract_answer("x", method="regex", pattern="(")
    with pytest.raises(ValueError, match="one of hash, last_number"):
        extract_answer("x", method="first")
    with pytest.raises(ValueError, match="only used with method='regex'"):
        extract_answer("x", method="hash", pattern="x")


@pytest.mark.parametrize("raw, expected", [
    (" 42 ", "42"), ("42.", "42"), ("42.0", "42"), ("1,000", "1000"), ("1,000.50", "1000.5"),
    ("-0", "0"), ("+7", "7"), ("$5", "5"), ("0.250", "0.25"), ("Yes", "yes"),
    ("New  York", "new york"), ("a,b", "a,b"),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_answers_match_and_accuracy():
    assert answers_match("1,000", "1000.0")
    assert not answers_match("10", "100")
    assert not answers_match(None, "3")
    assert answer_accuracy(["72", "1,000", None, "5"], ["72.0", "1000", "3", "6"]) == 0.5
    with pytest.raises(ValueError, match="2 predictions but 1"):
        answer_accuracy(["1", "2"], ["1"])
    with pytest.warns(RuntimeWarning):
        assert math.isnan(answer_accuracy([], []))


def test_first_line_extractor():
    from finemem.metrics.answers import extract_answer

    assert extract_answer("\n  Paris \nmore text", method="first_line") == "Paris"
    assert extract_answer("   \n", method="first_line") is None
