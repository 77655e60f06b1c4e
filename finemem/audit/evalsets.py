"""The evaluation sets an audit uses, read from the run's config.

A run names its evaluation sets under `data.eval`. For built-in `arith` runs that name none,
the audit uses the task's own: test, ood and the four robustness variants of test.
"""

from __future__ import annotations

from dataclasses import dataclass

from finemem.config import DataSource, RunConfig
from finemem.data.example import Example
from finemem.data.loaders import load_examples

ROBUSTNESS = ("test_preamble", "test_distractor", "test_renamed", "test_reworded")


@dataclass
class EvalSet:
    name: str
    examples: list[Example]

    @property
    def graded(self) -> bool:
        return all(ex.answer is not None for ex in self.examples)


def eval_sets(cfg: RunConfig, tokenizer=None, *, default_n: int = 300) -> dict[str, EvalSet]:
    sources = dict(cfg.data.eval)
    train = cfg.data.train
    if not sources and train.source.startswith("builtin:"):
        for split in ("test", "ood", *ROBUSTNESS):
            sources[split] = DataSource(source=train.source, split=split, n=default_n,
                                        seed=train.seed)
    if "test" not in sources:
        from finemem.errors import UserError

        raise UserError("the audit needs an evaluation set named 'test' under data.eval",
                        field="data.eval")
    return {name: EvalSet(name, load_examples(src, tokenizer=tokenizer))
            for name, src in sources.items()}


def train_sample(cfg: RunConfig, n: int, tokenizer=None) -> list[Example]:
    src = cfg.data.train.model_copy(update={"n": min(n, cfg.data.train.n or n)})
    return load_examples(src, tokenizer=tokenizer)
