"""Members (trained on) and non-members (never trained on) of a run, for the probes that
compare the two: extraction, membership inference, canaries.

Usage (inside a probe's prepare):
    mem = members(ctx.run_dir, ctx.cfg, ctx.tokenizer, n=200)        # [(Example, times)]
    non = nonmembers(ctx.cfg, ctx.tokenizer, n=200, members=[e for e, _ in mem])

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
            seed: int = 0) -> list[tuple[Example, int]]:
    """Up to n training examples of the run with the times each was seen per epoch (from
    manifest.jsonl), a seeded sample in training order. Raises `UserError` when the run has
    no manifest."""
    from finemem.data.loaders import load_examples

    path = Path(run_dir) / "manifest.jsonl"
    if not path.is_file():
        raise UserError("run has no manifest.jsonl, so its training examples are unknown; "
                        "train it with `finemem train`", source=str(run_dir))
    times = {str(r["id"]): int(r["times_per_epoch"]) for r in read_manifest(path)
             if int(r["times_per_epoch"]) > 0}  # a row dedup removed wholly was not trained on
    train = [ex for ex in load_examples(cfg.data.train, tokenizer=tokenizer)
             if str(ex.id) in times]
    return [(ex, times[str(ex.id)]) for ex in seeded_sample(train, n, seed)]


def nonmembers(cfg, tokenizer=None, *, n: int | None = None, seed: int = 0,
               members: list[Example] | None = None) -> list[Example]:
    """Up to n examples the run never trained on: `audit.nonmembers` if set, else the "test"
    eval set. With `members`, refuses (UserError naming the ids) any that is also a member."""
    from finemem.audit.evalsets import eval_sources
    from finemem.data.loaders import load_examples

    src = getattr(cfg.audit, "nonmembers", None)
    field = "audit.nonmembers"
    if src is None:
        sources = eval_sources(cfg)
        if "test" not in sources:
            raise UserError("no non-members: set audit.nonmembers (a data source the run never "
                            "trained on) or data.eval.test", field="audit.nonmembers")
        src, field = sources["test"][0], "data.eval.test"
    examples = seeded_sample(load_examples(src, tokenizer=tokenizer), n, seed)
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
