"""What a probe sees of one audit: the run, its data, the engine and the store.

Usage (inside a probe):
    scores = ctx.score(ref, model, "test", examples, loss_on="completion")
    gens = ctx.generate(ref, model, examples, max_new_tokens=64)           # greedy, cached
    ctx.put(ref, "test", "perplexity", 3.2, n=300, lo=3.1, hi=3.3)
    ctx.put(ref, "test", "distinct_fraction", 0.9, n=40, settings={"k": 8, "first_line": False})

Every score and generation goes through the engine's per-example cache in the results store,
keyed by the checkpoint's content hash and the settings that change it: two probes that ask
for the same greedy continuation get one, and an interrupted audit resumes. Metric names are
registry names (`finemem.metrics.get_metric`); settings are stored beside the value as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from finemem import distributed as ddp
from finemem import engine
from finemem.config import RunConfig
from finemem.data.example import Example
from finemem.data.format import encode, encode_prompt
from finemem.metrics.registry import get_metric
from finemem.store import Store


def setting_key(**settings) -> str:
    """Settings stored beside a metric value: canonical JSON, '' for none."""
    return json.dumps(settings, sort_keys=True) if settings else ""


@dataclass
class AuditContext:
    run_dir: Path
    cfg: RunConfig
    tokenizer: object
    store: Store
    phase: Callable[[str], None] = field(default=lambda what: None)
    _memo: dict = field(default_factory=dict, repr=False)

    # data ------------------------------------------------------------------------------
    def eval_sets(self, extractor: str = "auto", answer_regex: str | None = None) -> dict:
        """The run's eval sets, loaded once per (extractor, regex) for all probes."""
        from finemem.audit.evalsets import eval_sets

        key = ("eval", extractor, answer_regex)
        if key not in self._memo:
            self._memo[key] = eval_sets(self.cfg, self.tokenizer, extractor=extractor,
                                        answer_regex=answer_regex,
                                        config_source=str(self.run_dir / "config.yaml"))
        return self._memo[key]

    def train_sample(self, n: int) -> list[Example]:
        from finemem.audit.evalsets import train_sample

        key = ("train", n)
        if key not in self._memo:
            self._memo[key] = train_sample(self.cfg, n, self.tokenizer)
        return self._memo[key]

    def overlap_warnings(self) -> list[str]:
        """One line per eval set that shares examples or prompts with the training data."""
        from finemem.audit.evalsets import overlap_warning
        from finemem.data.loaders import load_examples

        train = load_examples(self.cfg.data.train, tokenizer=self.tokenizer)
        found = (overlap_warning(name, s.examples, train) for name, s in self.eval_sets().items())
        return [w for w in found if w]

    # the engine, cached in the store ---------------------------------------------------
    def score(self, ref, model, examples: list[Example], *, loss_on: str = "completion"):
        """Teacher-forced scores of each example's target (the completion, or the whole text
        with loss_on='all'), as trained: one `TokenScores` per example."""
        pairs = [encode(self.tokenizer, ex, loss_on=loss_on, max_length=self.cfg.data.max_length)
                 for ex in examples]
        return engine.score_cached(self.store, ref.content_hash, f"score:{loss_on}", model,
                                   [ex.id for ex in examples],
                                   [(p.context, p.target) for p in pairs])

    def generate(self, ref, model, examples: list[Example], *, max_new_tokens: int, n: int = 1,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0):
        """Continuations of each example's prompt (greedy, or n seeded samples; seeds come
        from the example ids, so they do not depend on batching)."""
        prompts = [encode_prompt(self.tokenizer, ex) for ex in examples]
        return engine.generate_cached(self.store, ref.content_hash, "prompt", model,
                                      self.tokenizer, [ex.id for ex in examples], prompts,
                                      max_new_tokens=max_new_tokens, n=n, do_sample=do_sample,
                                      temperature=temperature, top_p=top_p)

    # results ---------------------------------------------------------------------------
    def put(self, ref, split: str, name: str, value: float, *, n: int | None = None,
            lo: float | None = None, hi: float | None = None,
            settings: dict | None = None) -> None:
        """Store one metric of one checkpoint; `name` must be a registered metric, `n` is the
        sample size and `settings` (e.g. {"k": 8}) the options it was computed with."""
        get_metric(name)
        if not ddp.is_main():  # under `accelerate launch` only the main process writes metrics
            return
        self.store.put_metric(ref.name, split, name, float(value), n=n, lo=lo, hi=hi,
                              setting=setting_key(**(settings or {})))

    def put_examples(self, ref, split: str, name: str, ids: list[str], values,
                     **settings) -> None:
        """Store one value per example (e.g. each test example's NLL) for later analyses."""
        get_metric(name)
        # every rank writes these (the same rows): a later probe on each rank reads them back
        key = f"{split}/{name}" + (f"|{setting_key(**settings)}" if settings else "")
        self.store.put_examples((ref.content_hash, str(i), key, "value", json.dumps(float(v)))
                                for i, v in zip(ids, values))

    def get_examples(self, ref, split: str, name: str, **settings) -> dict[str, float]:
        key = f"{split}/{name}" + (f"|{setting_key(**settings)}" if settings else "")
        return {i: json.loads(v) for i, v in
                self.store.get_examples(ref.content_hash, key, "value").items()}
