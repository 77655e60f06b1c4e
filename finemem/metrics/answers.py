"""Final-answer extraction and matching for reasoning tasks.

Usage:
    from finemem.metrics.answers import extract_answer, answers_match
    pred = extract_answer(generation, method="hash")      # '#### 42' -> '42'
    answers_match(pred, "42.0")                           # True

Extractors (all return None when no answer is found, never raise on model output):
- "hash": the text after the last '####' (GSM8K / MetaMathQA style), up to the end of its line;
- "last_number": the last number in the text ('1,234', '-3.5'; grouping commas only in
  groups of three, so '1,2,3' ends in '3');
- "boxed": the content of the last ``\\boxed{...}``, nested braces allowed (MATH style);
- "regex": the last match of a user pattern; its group 1 if the pattern has a group, else the
  whole match.
"""

from __future__ import annotations

import math
import re
import warnings
from decimal import Decimal, InvalidOperation

import numpy as np

from finemem.metrics.registry import register_metric

METHODS = ("hash", "last_number", "boxed", "regex", "first_line")

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_HASH = re.compile(r"####[ \t]*([^\n]*)")
_GROUPING_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")


def extract_answer(text: str, *, method: str = "hash", pattern: str | None = None) -> str | None:
    r"""Pull the final answer out of a generation.

    Parameters
    ----------
    text : str
        Model output (or reference solution).
    method : {"hash", "last_number", "boxed", "regex", "first_line"}, keyword-only
        See the module docstring.
    pattern : str, keyword-only
        Regular expression, required for ``method="regex"``.

    Returns
    -------
    str or None
        The raw answer string (not normalized), stripped of surrounding whitespace.

    Examples
    --------
    >>> extract_answer("so 6*7 = 42\n#### 42")
    '42'
    >>> extract_answer("It costs $1,250.", method="last_number")
    '1,250'
    >>> extract_answer(r"\boxed{\frac{1}{2}}", method="boxed")
    '\\frac{1}{2}'
    """
    if method not in METHODS:
        raise ValueError(f"unknown answer extractor '{method}'; use one of {', '.join(METHODS)}")
    if method == "regex":
        return _extract_regex(text, pattern)
    if pattern is not None:
        raise ValueError(f"pattern is only used with method='regex', not '{method}'")
    if method == "hash":
        matches = _HASH.findall(text)
        return (matches[-1].strip() or None) if matches else None
    if method == "last_number":
        matches = _NUMBER.findall(text)
        return matches[-1] if matches else None
    if method == "first_line":  # short-answer tasks: qa span, translation, sentiment label
        return next((ln.strip() for ln in text.splitlines() if ln.strip()), None)
    return _extract_boxed(text)


def _extract_regex(text: str, pattern: str | None) -> str | None:
    if not pattern:
        raise ValueError("method='regex' needs a pattern, e.g. pattern=r'answer is (\\S+)'")
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"invalid answer regex {pattern!r}: {e}") from None
    last = None
    for last in rx.finditer(text):
        pass
    if last is None:
        return None
    ans = last.group(1) if rx.groups >= 1 else last.group(0)
    return ans.strip() if ans is not None else None


def _extract_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    while start != -1:
        i = start + len("\\boxed{")
        depth = 1
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i:j].strip()
        # Unbalanced (e.g. truncated generation): try an earlier \boxed{.
        start = text.rfind("\\boxed{", 0, start)
    return None


def normalize_answer(s: str | None) -> str | None:
    """Canonical form for comparing answers.

    Strips whitespace, a leading '$' and trailing '.', removes grouping commas in numbers,
    writes numbers canonically ('42.0' -> '42', '0.50' -> '0.5', '-0' -> '0') and lowercases.

    >>> normalize_answer(" 1,000.00. ")
    '1000'
    >>> normalize_answer("Yes")
    'yes'
    """
    if s is None:
        return None
    t = s.strip()
    t = t.rstrip(".").strip()
    if t.startswith("$"):
        t = t[1:].strip()
    t = _GROUPING_COMMA.sub("", t)
    if re.fullmatch(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)", t):
        try:
            d = Decimal(t)
        except InvalidOperation:  # pragma: no cover - the regex only lets numbers through
            return t.lower()
        if d == d.to_integral_value():
            return str(int(d))
        return format(d.normalize(), "f")
    return " ".join(t.lower().split())


def answers_match(pred: str | None, ref: str | None) -> bool:
    """True when both answers exist and are equal after `normalize_answer`.

    >>> answers_match("42.0", "42"), answers_match(None, "42")
    (True, False)
    """
    if pred is None or ref is None:
        return False
    return normalize_answer(pred) == normalize_answer(ref)


@register_metric("answer_accuracy", higher_is_better=True, more_memorized_when=None,
                 kind="rate", inputs="pred_ref")
def answer_accuracy(preds, refs) -> float:
    r"""Share of predictions whose final answer matches the reference.

    .. math:: \frac1n \sum_i \mathbb 1[\mathrm{norm}(\hat a_i) = \mathrm{norm}(a_i)]

    A missing prediction (None: nothing extracted) counts as wrong. Empty input -> nan + warning.

    >>> answer_accuracy(["42", None, "7"], ["42.0", "3", "8"])
    0.3333333333333333
    """
    preds, refs = list(preds), list(refs)
    if len(preds) != len(refs):
        raise ValueError(f"answer_accuracy: {len(preds)} predictions but {len(refs)} references")
    if not preds:
        warnings.warn("answer_accuracy: no examples; returning nan", RuntimeWarning, stacklevel=2)
        return math.nan
    return sum(answers_match(p, r) for p, r in zip(preds, refs)) / len(preds)


@register_metric("accuracy_drop", higher_is_better=False, more_memorized_when=None,
                 inputs="flag_sets")
def accuracy_drop(clean_correct, variant_correct) -> float:
    r"""Accuracy lost under a robustness variant: ``mean(clean) - mean(variant)``.

    Paper 1 reports over-memorized checkpoints as less robust to perturbed questions; the drop
    from a checkpoint's own clean accuracy separates robustness from accuracy itself.

    >>> accuracy_drop([True, True, False, True], [True, False, False, False])
    0.5
    """
    c = np.asarray(clean_correct, dtype=bool).ravel()
    v = np.asarray(variant_correct, dtype=bool).ravel()
    if c.size == 0 or v.size == 0:
        warnings.warn("accuracy_drop: an empty set; returning nan", RuntimeWarning, stacklevel=2)
        return math.nan
    return float(c.mean() - v.mean())
