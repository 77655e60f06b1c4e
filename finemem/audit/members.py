"""Members (trained on) and non-members (never trained on) of a run, for the probes that
compare the two: extraction, membership inference, canaries.

Usage (a probe asks its context, which reads the training data once per audit):
    mem = ctx.members(n=200, seed=0)          # [(Example, times)]
    non = ctx.nonmembers(n=200, seed=0)       # checked against every member

Members come from the run's manifest (every distinct training example, with how often it was
seen per epoch), as trained: after a hold-out, before duplication. Non-members come from
`audit.nonmembers` when set (a data source, like data.train), else from the run's "test" eval
set: a held-out split of the same task or file. A non-member whose prompt and completion are
also a member's is refused, with the ids.
"""

from __future__ import annotations

import random
from pathlib import Path

from finemem.data.duplication import read_manifest
from finemem.data.example import Example
from finemem.errors import UserError


def seeded_sample(items: list, n: int | None, seed: int) -> list:
    """`items` when n is None or covers them, else a seeded sample kept in the original order."""
    if n is None or n >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def members(run_dir: str | Path, cfg, tokenizer=None, *, n: int | None = None,
            seed: int = 0, train: list[Example] | None = None) -> list[tuple[Example, int]]:
    """Up to n training examples of the run with the times each was seen per epoch (from
    manifest.jsonl), a seeded sample in training order. `train`: the training examples as
    trained, when the caller has them (else read from `cfg.data.train`). Raises `UserError`
    when the run has no manifest."""
    from finemem.data.loaders import load_examples

    path = Path(run_dir) / "manifest.jsonl"
    if not path.is_file():
        raise UserError("run has no manifest.jsonl, so its training examples are unknown; "
                        "train it with `finemem train`", source=str(run_dir))
    times = {str(r["id"]): int(r["times_per_epoch"]) for r in read_manifest(path)
             if int(r["times_per_epoch"]) > 0}  # a row dedup removed wholly was not trained on
    if train is None:
        train = load_examples(cfg.data.train, tokenizer=tokenizer)
    train = [ex for ex in train if str(ex.id) in times]
    return [(ex, times[str(ex.id)]) for ex in seeded_sample(train, n, seed)]


def nonmember_source(cfg):
    """(data source, config field) of the non-members: `audit.nonmembers` if set, else the
    "test" eval set."""
    from finemem.audit.evalsets import eval_sources

    src = getattr(cfg.audit, "nonmembers", None)
    if src is not None:
        return src, "audit.nonmembers"
    sources = eval_sources(cfg)
    if "test" not in sources:
        raise UserError("no non-members: set audit.nonmembers (a data source the run never "
                        "trained on) or data.eval.test", field="audit.nonmembers")
    return sources["test"][0], "data.eval.test"


def nonmembers(cfg, tokenizer=None, *, n: int | None = None, seed: int = 0,
               members: list[Example] | None = None,
               pool: list[Example] | None = None) -> list[Example]:
    """Up to n examples the run never trained on: `audit.nonmembers` if set, else the "test"
    eval set (`pool`: that source's examples, when the caller has read them). With `members`,
    refuses (UserError naming the ids) any that is also a member."""
    from finemem.data.loaders import load_examples

    src, field = nonmember_source(cfg)
    if pool is None:
        pool = load_examples(src, tokenizer=tokenizer)
    examples = seeded_sample(pool, n, seed)
    if not examples:
        raise UserError("the non-member set is empty", source=src.source, field=field)
    if members is not None:
        check_disjoint(members, examples, source=src.source, field=field)
    return examples


def check_disjoint(members: list[Example], nonmembers: list[Example], *,
                   source: str | None = None, field: str | None = None) -> None:
    """Raise `UserError` naming the non-members whose (prompt, completion), whitespace
    stripped, is also a member's: they would count as both."""
    seen = {(ex.prompt.strip(), ex.completion.strip()) for ex in members}
    both = [str(ex.id) for ex in nonmembers if (ex.prompt.strip(), ex.completion.strip()) in seen]
    if both:
        shown = ", ".join(both[:5]) + (f" and {len(both) - 5} more" if len(both) > 5 else "")
        raise UserError(f"{len(both)} non-members are also training examples (ids {shown}); "
                        "non-members must be data the run never trained on",
                        source=source, field=field)
