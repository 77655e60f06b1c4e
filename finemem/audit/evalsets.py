"""The evaluation sets of a run, read from its config, and the checks `finemem train` runs on
them before it writes anything.

Usage:
    sets = eval_sets(cfg, tokenizer)              # {"test": EvalSet(...), "ood": ...}
    sets["test"].graded, sets["test"].extractor   # True, "hash"
    warnings = check_eval_sets(cfg, tokenizer, config_source="run.yaml")   # raises UserError

Which sets:
- the sets named under `data.eval`; else, for a builtin task, the task's own `eval_splits`
  (arith: test, ood and four robustness variants of test; the other tasks: test), drawn with
  the training source's seed and options, n = 300 each;
- when `data.train` holds out part of its file (`split: {test: 0.15}`) and `data.eval` names no
  `test`, the held-out share is the "test" set.
A set named "test" is required by the audit.

Roles, by name: "test" -> test, "ood" -> ood, "test_<anything>" -> variant (a robustness variant
of test: the audit reports accuracy_drop = test accuracy - variant accuracy), any other -> extra.
A builtin task's default sets take the roles its `eval_splits` declares.

Grading: a set is graded (greedy accuracy) when it has an extractor and every example has an
`answer`; otherwise it is scored by perplexity only. The extractor is the `extractor` argument
(the audit's answer_extractor setting) unless that is "auto". "auto" resolves per set:
- a builtin task source: the task's `answer_extractor` (arith "hash"; qa, translate and
  sentiment "first_line"; summarize and dialog none);
- other data with answers: inferred from the reference completions: "hash" when more than half
  contain "####", else "boxed" when more than half contain "\\boxed{", else "first_line";
- a set whose examples carry no answer at all: none (ungraded).
Free text (no natural answer): map `answer` to the reply column and pick "first_line" to grade
exact first-line matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from finemem.config import DataSource, RunConfig
from finemem.data.example import Example
from finemem.data.loaders import load_examples
from finemem.errors import UserError
from finemem.metrics.answers import METHODS as EXTRACTORS
from finemem.metrics.answers import answers_match, extract_answer

ROLES = ("test", "ood", "variant", "extra")
DEFAULT_N = 300  # examples per default eval set of a builtin task
# arith's robustness variants of test (kept for callers that name them).
ROBUSTNESS = ("test_preamble", "test_distractor", "test_renamed", "test_reworded")
# DataSource keys: an error on one of them is reported as data.eval.<name>.<key>.
_SOURCE_KEYS = ("source", "split", "n", "seed", "options", "fields")


@dataclass
class EvalSet:
    name: str
    examples: list[Example]
    role: str                 # "test" | "ood" | "variant" | "extra"
    extractor: str | None     # how generations are graded; None = ungraded (PPL only)
    answer_regex: str | None = None

    @property
    def graded(self) -> bool:
        return (self.extractor is not None and bool(self.examples)
                and all(ex.answer is not None for ex in self.examples))


def role_of(name: str) -> str:
    """The role of an eval set named `name` (see the module docstring)."""
    if name in ("test", "ood"):
        return name
    return "variant" if name.startswith("test_") else "extra"


def eval_sources(cfg: RunConfig) -> dict[str, tuple[DataSource, str, bool]]:
    """name -> (source, role, implicit) of every eval set, unloaded; implicit = not named
    under data.eval (a builtin task's default or the held-out share of data.train)."""
    train = cfg.data.train
    out = {name: (src, role_of(name), False) for name, src in cfg.data.eval.items()}
    if not out and train.source.startswith("builtin:") and isinstance(train.split, str):
        from finemem.data.tasks import get_task

        task = get_task(train.source.split(":", 1)[1], **train.options)
        for split, role in task.eval_splits.items():
            src = DataSource(source=train.source, split=split, n=DEFAULT_N, seed=train.seed,
                             options=train.options)
            src._format = train._format  # data.format reaches the task's own splits too
            out[split] = (src, role, True)
    if "test" not in out and not isinstance(train.split, str):
        held = train.model_copy(update={"split": train.split.model_copy(update={"part": "test"}),
                                        "n": None})
        out["test"] = (held, "test", True)
    return out


def eval_sets(cfg: RunConfig, tokenizer=None, *, extractor: str = "auto",
              answer_regex: str | None = None,
              config_source: str | None = None) -> dict[str, EvalSet]:
    """Load every eval set of `cfg` (see the module docstring). `extractor` is the audit's
    answer_extractor ("auto" or one of `EXTRACTORS`). Raises `UserError` naming the set
    (field data.eval.<name>) and `config_source`, or when there is no "test" set."""
    sets = _load(cfg, tokenizer, extractor, answer_regex, config_source)
    if "test" not in sets:
        raise UserError(_NO_TEST, source=config_source, field="data.eval")
    return sets


def train_sample(cfg: RunConfig, n: int, tokenizer=None) -> list[Example]:
    """The first n training examples, as trained (after a hold-out, before duplication)."""
    src = cfg.data.train.model_copy(update={"n": min(n, cfg.data.train.n or n)})
    return load_examples(src, tokenizer=tokenizer)


def check_eval_sets(cfg: RunConfig, tokenizer=None, *, config_source: str | None = None,
                    train_examples: list[Example] | None = None) -> list[str]:
    """Load every eval set (raising `UserError` on the first bad one) and return warnings:
    no "test" set, a set that overlaps the training data, a set with answers on only some
    examples, an extractor that does not find the reference answers. `train_examples` (as
    trained) saves loading the training data again."""
    ext, regex = audit_extractor(cfg)
    try:
        check_extractor(ext, regex)
    except UserError:
        ext, regex = "auto", None  # a bad audit setting is the audit config's error, not ours
    sets = _load(cfg, tokenizer, ext, regex, config_source)
    warnings = [] if "test" in sets else [_NO_TEST]
    if train_examples is None:
        train_examples = load_examples(cfg.data.train, tokenizer=tokenizer)
    for s in sets.values():
        w = overlap_warning(s.name, s.examples, train_examples)
        if w:
            warnings.append(w)
        missing = sum(ex.answer is None for ex in s.examples)
        if 0 < missing < len(s.examples):
            warnings.append(f"eval set '{s.name}': {missing} of {len(s.examples)} examples have "
                            "no answer, so the set is not graded (perplexity only); give every "
                            "example an answer, or none")
        if s.graded:
            found = sum(answers_match(extract_answer(ex.completion, method=s.extractor,
                                                     pattern=s.answer_regex), ex.answer)
                        for ex in s.examples)
            if found < len(s.examples):
                warnings.append(
                    f"eval set '{s.name}': the '{s.extractor}' answer extractor finds the answer "
                    f"in only {found} of {len(s.examples)} reference completions, so accuracy "
                    "will undercount; set the audit's answer_extractor to one that does "
                    f"({', '.join(EXTRACTORS)})")
    return warnings


def overlap_warning(name: str, examples: list[Example],
                    train_examples: list[Example]) -> str | None:
    """A warning when eval set `name` shares examples (prompt + completion) or prompts with
    the training data (compared with surrounding whitespace stripped), else None."""
    pairs = {(ex.prompt.strip(), ex.completion.strip()) for ex in train_examples}
    prompts = {p for p, _ in pairs}
    same = sum((ex.prompt.strip(), ex.completion.strip()) in pairs for ex in examples)
    same_prompt = sum(ex.prompt.strip() in prompts for ex in examples)
    if not same_prompt:
        return None
    n = len(examples)
    what = ("is the training data: all" if same == n else f"overlaps the training data: {same} of")
    return (f"eval set '{name}' {what} {n} examples are also trained on (same prompt and "
            f"completion), and {same_prompt} of {n} prompts appear in training; its scores "
            "measure memorization, not generalization. Evaluate on separate data, or hold out "
            "part of the training file with data.train.split: {test: 0.15}")


def infer_extractor(examples: list[Example]) -> str | None:
    """The extractor for user data (see the module docstring): None without answers."""
    refs = [ex.completion for ex in examples if ex.answer is not None]
    if not refs:
        return None
    if sum("####" in c for c in refs) * 2 > len(refs):
        return "hash"
    if sum("\\boxed{" in c for c in refs) * 2 > len(refs):
        return "boxed"
    return "first_line"


def check_extractor(extractor: str, answer_regex: str | None = None) -> None:
    if extractor != "auto" and extractor not in EXTRACTORS:
        raise UserError(f"unknown answer extractor '{extractor}'; use auto or one of "
                        f"{', '.join(EXTRACTORS)}", field="answer_extractor")
    if extractor == "regex" and not answer_regex:
        raise UserError("answer_extractor 'regex' needs answer_regex, e.g. 'answer is (\\S+)'",
                        field="answer_regex")
    if extractor == "regex":  # the metric's ValueError on a bad pattern, at the door
        try:
            extract_answer("", method="regex", pattern=answer_regex)
        except ValueError as e:
            raise UserError(str(e), field="answer_regex") from None


def audit_extractor(cfg: RunConfig) -> tuple[str, str | None]:
    """(answer_extractor, answer_regex) as the run's audit settings give them (the first audit
    section that has one), ("auto", None) when none does."""
    audit = cfg.audit
    for section in [audit, *(getattr(audit, "__pydantic_extra__", None) or {}).values()]:
        ext = getattr(section, "answer_extractor", None)
        if isinstance(ext, str):
            return ext, getattr(section, "answer_regex", None)
    return "auto", None


# ---------------------------------------------------------------- internals

_NO_TEST = ("no evaluation set named 'test': the audit needs one; add data.eval.test (e.g. "
            "{source: data/test.jsonl}), or hold out part of the training file with "
            "data.train.split: {test: 0.15}")


def _load(cfg: RunConfig, tokenizer, extractor: str, answer_regex: str | None,
          config_source: str | None) -> dict[str, EvalSet]:
    check_extractor(extractor, answer_regex)
    out = {}
    for name, (src, role, implicit) in eval_sources(cfg).items():
        try:
            examples = load_examples(src, tokenizer=tokenizer)
        except UserError as e:
            raise _in_eval_set(e, name, config_source, implicit) from None
        ext = _resolve(extractor, src, examples)
        out[name] = EvalSet(name, examples, role, ext,
                            answer_regex if ext == "regex" else None)
    return out


def _resolve(extractor: str, src: DataSource, examples: list[Example]) -> str | None:
    if not any(ex.answer is not None for ex in examples):
        return None
    if extractor != "auto":
        return extractor
    if src.source.startswith("builtin:"):
        from finemem.data.tasks import get_task

        return get_task(src.source.split(":", 1)[1], **src.options).answer_extractor
    return infer_extractor(examples)


def _in_eval_set(e: UserError, name: str, config_source: str | None,
                 implicit: bool) -> UserError:
    """`e` (from loading one eval set) re-raised as an error of field data.eval.<name>[.key]
    in the config; the data file, row and column it names stay in the message."""
    text = str(e)
    msg = getattr(e, "message", text)
    prefix = text[: len(text) - len(msg)] if text.endswith(msg) else ""
    prefix = prefix.removesuffix(": ")
    m = re.search(r"(?:^|, )field '([^']*)'$", prefix)
    inner = m.group(1) if m else None
    where = prefix[: m.start()] if m else prefix
    field = f"data.eval.{name}"
    if inner in ("task", "method"):
        field += ".source"
    elif inner is not None and inner.split(".")[0] in _SOURCE_KEYS:
        field += f".{inner}"
    elif inner is not None:  # a column of the data file
        where = f"{where}, column '{inner}'" if where else f"column '{inner}'"
    note = f" ({where})" if where else ""
    if implicit:
        note += f" [the default eval set '{name}', drawn from data.train]"
    return UserError(msg + note, source=config_source, field=field)
