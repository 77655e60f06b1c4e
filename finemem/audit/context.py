"""What a probe sees of one audit: the run, its data, and the model calls it may make.

Usage (inside a probe):
    scores = ctx.score(ref, model, examples, loss_on="completion")       # TokenScores each
    gens = ctx.generate(ref, model, examples, max_new_tokens=64)           # greedy, cached
    stats = ctx.attention(ref, model, ids, pairs, prompt_lens=lens, setting="extract:32:32")
    base = ctx.base_scores(ref, model, examples, loss_on="completion")    # the base model's
    own = ctx.self_reference_scores(ref, model, examples, prompts=pool, loss_on="completion",
                                    max_new_tokens=48, steps=20)     # SPV-MIA's reference
    mem = ctx.members(n=200, seed=0)             # [(Example, times)], the training data read once
    ctx.put(ref, "test", "perplexity", 3.2, n=300, lo=3.1, hi=3.3)
    ctx.put(ref, "test", "distinct_fraction", 0.9, n=40, settings={"k": 8, "first_line": False})
    ctx.put_examples(ref, "train", "mean_nll", ids, values)                # one number each
    ctx.put_values(ref, "members", "generation", ids, texts)               # any JSON value

Every model call goes through the engine's per-example cache in the results store, keyed by
the checkpoint's content hash and the settings that change it: two probes that ask for the
same greedy continuation get one, an interrupted audit resumes, and under `accelerate launch`
each process computes its share. Metric names are registry names
(`finemem.metrics.get_metric`); settings are stored beside the value as JSON. The data a probe
reads (eval sets, training data, members, non-members) is loaded once per audit for all
probes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from finemem import distributed as ddp
from finemem import engine
from finemem.config import RunConfig
from finemem.data.example import Example
from finemem.data.format import encode, encode_prompt
from finemem.metrics.registry import get_metric
from finemem.run import RunFolder
from finemem.store import Store, setting_key  # noqa: F401 (setting_key: re-exported)


@dataclass
class AuditContext:
    run_dir: Path
    cfg: RunConfig
    tokenizer: object
    store: Store
    phase: Callable[[str], None] = field(default=lambda what: None)
    _loaded: dict = field(default_factory=dict, repr=False)
    _tokens: dict = field(default_factory=dict, repr=False)  # see `_encode`

    def once(self, key, load: Callable[[], object]):
        """`load()` the first time `key` is asked for in this audit, the same object after:
        for data several probes prepare from (e.g. the extraction items the attention probe
        shares)."""
        if key not in self._loaded:
            self._loaded[key] = load()
        return self._loaded[key]

    # data ------------------------------------------------------------------------------
    @property
    def max_length(self) -> int:
        """data.max_length as training used it (unset: the model's context, at most 512)."""
        from finemem.models.load import run_max_length

        return self.once("max_length", lambda: run_max_length(self.cfg))

    def eval_sets(self, extractor: str = "auto", answer_regex: str | None = None) -> dict:
        """The run's eval sets, loaded once per (extractor, regex) for all probes."""
        from finemem.audit.evalsets import eval_sets

        return self.once(("eval", extractor, answer_regex), lambda: eval_sets(
            self.cfg, self.tokenizer, extractor=extractor, answer_regex=answer_regex,
            config_source=str(RunFolder(self.run_dir).config_file)))

    def train_sample(self, n: int) -> list[Example]:
        """The first n training examples, as trained."""
        from finemem.audit.evalsets import train_sample

        return self.once(("train", n), lambda: train_sample(self.cfg, n, self.tokenizer))

    def train_examples(self) -> list[Example]:
        """Every training example, as trained (after a hold-out, before duplication)."""
        from finemem.data.loaders import load_examples

        return self.once("train-all", lambda: load_examples(self.cfg.data.train,
                                                            tokenizer=self.tokenizer))

    def members(self, *, n: int | None = None, seed: int = 0) -> list[tuple[Example, int]]:
        """Up to n training examples with the times each was seen per epoch
        (`finemem.audit.members.members`), from the training data read once."""
        from finemem.audit.members import members

        return self.once(("members", n, seed), lambda: members(
            self.run_dir, self.cfg, n=n, seed=seed, train=self.train_examples()))

    def nonmembers(self, *, n: int | None = None, seed: int = 0,
                   members: list[Example] | None = None) -> list[Example]:
        """Up to n examples the run never trained on (`finemem.audit.members.nonmembers`),
        checked against `members` (default: every member); their source is read once."""
        from finemem.audit.members import nonmember_source, nonmembers
        from finemem.data.loaders import load_examples

        pool = self.once("nonmember-pool", lambda: load_examples(
            nonmember_source(self.cfg)[0], tokenizer=self.tokenizer))
        if members is None:
            members = [e for e, _ in self.members()]
        return nonmembers(self.cfg, n=n, seed=seed, members=members, pool=pool)

    def dp_record(self) -> dict | None:
        """The run's DP-SGD record (RUN_DIR/dp.json, `finemem.run.privacy`), read once; None
        for a run trained without training.dp."""
        from finemem.run.privacy import read_dp

        return self.once("dp", lambda: read_dp(self.run_dir))

    def overlap_warnings(self) -> list[str]:
        """One line per eval set that shares examples or prompts with the training data."""
        from finemem.audit.evalsets import overlap_warning

        train = self.train_examples()
        found = (overlap_warning(name, s.examples, train) for name, s in self.eval_sets().items())
        return [w for w in found if w]

    # the engine, cached in the store ---------------------------------------------------
    def score(self, ref, model, examples: list[Example], *, loss_on: str = "completion"):
        """Teacher-forced scores of each example's target (the completion, or the whole text
        with loss_on='all'), as trained: one `TokenScores` per example."""
        return self.score_tokens(ref, model, [ex.id for ex in examples],
                                 [self._encode(ex, loss_on) for ex in examples],
                                 setting=_score_setting(loss_on))

    def _encode(self, ex: Example, loss_on: str | None):
        """The tokens of an example, as a (context, target) pair, or its prompt's tokens when
        `loss_on` is None: tokenized once per audit, since every checkpoint asks for the same
        (the engine copies them; nothing changes them)."""
        key = (loss_on, ex.chat, ex.prompt, ex.completion if loss_on else None)
        if key not in self._tokens:
            if loss_on is None:
                self._tokens[key] = encode_prompt(self.tokenizer, ex)
            else:
                p = encode(self.tokenizer, ex, loss_on=loss_on, max_length=self.max_length)
                self._tokens[key] = (p.context, p.target)
        return self._tokens[key]

    def score_request(self, examples: list[Example], *, loss_on: str = "completion"):
        """What `score` will ask the engine for, as a request a probe hands the loop
        (`Probe.requests`) so that the texts several probes score are read once."""
        return engine.ScoreRequest(_score_setting(loss_on), [str(ex.id) for ex in examples],
                                   [self._encode(ex, loss_on) for ex in examples])

    def token_request(self, ids: list[str], pairs: list[tuple[list, list]], *, setting: str):
        """What `score_tokens` will ask the engine for, as a request (`score_request`)."""
        return engine.ScoreRequest(setting, [str(i) for i in ids], pairs)

    def generation_request(self, ids: list[str], prompts: list[list[int]], *, setting: str,
                           **kw):
        """What `generate_tokens` will ask the engine for, as a request (`score_request`)."""
        return engine.GenerationRequest(setting, [str(i) for i in ids], prompts, kw)

    def prefetch(self, ref, model, requests: list) -> None:
        """Run the probes' requests for `ref` together into the cache their own calls then
        read (`engine.share`): scores one pass per distinct token sequence, generations with
        the same settings in one call. Where `audit.share_passes` is unset, only for models
        where a pass is costly (`engine.large_model`)."""
        on = self.cfg.audit.share_passes
        if not requests or model is None or on is False or (on is None and
                                                            not engine.large_model(model)):
            return
        scores = [r for r in requests if isinstance(r, engine.ScoreRequest)]
        gens = [r for r in requests if isinstance(r, engine.GenerationRequest)]
        if scores:
            n = sum(len(r.ids) for r in scores)
            self.phase(f"scoring {n} requested pairs, one pass per distinct text")
            engine.score_shared(self.store, ref.content_hash, model, scores)
        if gens:
            self.phase(f"generating for {sum(len(r.ids) for r in gens)} requested prompts")
            engine.generate_shared(self.store, ref.content_hash, model, self.tokenizer, gens)

    def score_tokens(self, ref, model, ids: list[str], pairs: list[tuple[list, list]], *,
                     setting: str):
        """Teacher-forced scores of token pairs (context, target) a probe cut itself;
        `setting` names how it cut them (part of the cache key)."""
        return engine.score_cached(self.store, ref.content_hash, setting, model, ids, pairs)

    def generate(self, ref, model, examples: list[Example], *, max_new_tokens: int, n: int = 1,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0):
        """Continuations of each example's prompt (greedy, or n seeded samples; seeds come
        from the example ids, so they do not depend on batching)."""
        prompts = [self._encode(ex, None) for ex in examples]
        return self.generate_tokens(ref, model, [ex.id for ex in examples], prompts,
                                    setting="prompt", max_new_tokens=max_new_tokens, n=n,
                                    do_sample=do_sample, temperature=temperature, top_p=top_p)

    def generate_tokens(self, ref, model, ids: list[str], prompts: list[list[int]], *,
                        setting: str, **kw):
        """Continuations of token prompts a probe cut itself (`engine.generate_cached`
        options in `kw`)."""
        return engine.generate_cached(self.store, ref.content_hash, setting, model,
                                      self.tokenizer, ids, prompts, **kw)

    def attention(self, ref, model, ids: list[str], pairs: list[tuple[list, list]], *,
                  prompt_lens: list[int], setting: str) -> list[np.ndarray]:
        """Per pair, the (layers, heads, 3) attention statistics of `engine.attention`."""
        return engine.attention_cached(self.store, ref.content_hash, setting, model, ids, pairs,
                                       prompt_lens=prompt_lens)

    def base_ref(self):
        """The run's base model (step 0) as a checkpoint ref, looked up once per audit."""
        return self.run_refs()[0]

    def run_refs(self) -> list:
        """The run's checkpoint refs, base (step 0) first then by step, looked up once per
        audit (for a probe that reads what earlier checkpoints stored)."""
        return self.once("run_refs", lambda: engine.load_run_checkpoints(
            self.run_dir, store=self.store))

    def base_scores(self, ref, model, examples: list[Example], *, loss_on: str) -> list:
        """The base model's scores of `examples`: `ref`'s own when it is the base; else the
        base pass cached in the store (the audit loop visits step 0 first, so it is computed
        once), or, when it is missing (a parallel audit reached this checkpoint first, or the
        base was left out), the base scored once: the LoRA model in hand with its adapter
        off, else the base loaded through the engine."""
        base = self.base_ref()
        if ref.content_hash == base.content_hash:
            return self.score(ref, model, examples, loss_on=loss_on)
        if ref.kind == "lora" and not self._all_cached(base, examples, loss_on):
            with engine.adapter_off(model) as off:
                if off is not None:
                    return self.score(base, off, examples, loss_on=loss_on)
        return self._scores_of(self.run_dir, base, examples, loss_on=loss_on)

    def _all_cached(self, ref, examples: list[Example], loss_on: str) -> bool:
        ids = [str(e.id) for e in examples]
        return len(self.store.get_examples(ref.content_hash, _score_setting(loss_on), "score",
                                           ids)) == len(ids)

    def self_reference_scores(self, ref, model, examples: list[Example], *,
                              prompts: list[Example], loss_on: str, max_new_tokens: int,
                              steps: int, lr: float | None = None, seed: int = 0) -> list:
        """The scores of `examples` under a reference model fine-tuned on what the audited
        model (`ref`, `model`) writes after each of `prompts` (one seeded sample each, cached
        like every generation): SPV-MIA's self-calibrated reference. The reference is trained
        by finemem's training path into RUN_DIR/references/<key>/ (`finemem.audit.selfref`),
        `steps` optimizer steps from the run's base with the run's method, and reused by a
        rerun."""
        from finemem.audit.selfref import fine_tune_reference

        gens = self.generate(ref, model, prompts, max_new_tokens=max_new_tokens, n=1,
                             do_sample=True)
        texts = [Example(prompt=p.prompt, completion=g[0].text, id=f"self-{p.id}")
                 for p, g in zip(prompts, gens)]
        rref, folder = fine_tune_reference(self.run_dir, self.cfg, texts, steps=steps, lr=lr,
                                           seed=seed, key_parts=[ref.content_hash])
        return self._scores_of(folder, rref, examples, loss_on=loss_on)

    def _scores_of(self, run_dir: Path, ref, examples: list[Example], *, loss_on: str) -> list:
        """Scores of `examples` under another model than the one the loop holds (the base, a
        reference): the rows cached in the store, or that model loaded through the engine
        from `run_dir` and scored once."""
        if self._all_cached(ref, examples, loss_on):
            try:  # every row cached: the engine serves them without a model
                return self.score(ref, None, examples, loss_on=loss_on)
            except AttributeError:  # a stale row (other tokens) needs the model after all
                pass
        for _, other in engine.iter_models(run_dir, refs=[ref], dtype=self.cfg.dtype):
            return self.score(ref, other, examples, loss_on=loss_on)
        raise RuntimeError(f"the model {ref.name} could not be loaded")  # pragma: no cover

    def embeddings(self, space: str, keys: list[str], compute) -> dict[str, np.ndarray]:
        """{key: float32 vector} for `keys` in the vector space `space` (e.g. an encoder's
        name): read from the store, the missing ones `compute(missing_keys)` (an (n, d)
        array) and stored, so a rerun reads the same vectors."""
        got = self.store.get_vectors(space, keys)
        missing = [k for k in keys if k not in got]
        if missing:
            vecs = np.asarray(compute(missing), dtype=np.float32)
            self.store.put_vectors(space, zip(missing, vecs))
            got.update(zip(missing, vecs))
        return got

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
        """Store one number per example (e.g. each test example's NLL) for later analyses;
        `name` must be a registered metric."""
        get_metric(name)
        self.put_values(ref, split, name, ids, [float(v) for v in values], **settings)

    def put_values(self, ref, split: str, name: str, ids: list[str], values,
                   **settings) -> None:
        """Store one JSON value per example (a number, a text, a list), e.g. a generation."""
        # every rank writes these (the same rows): a later probe on each rank reads them back
        self.store.put_values(ref.content_hash, split, name, [str(i) for i in ids], values,
                              settings or None)

    def get_examples(self, ref, split: str, name: str, **settings) -> dict:
        """{example id: value} stored with `put_examples` / `put_values` ({} when none)."""
        return self.store.get_values(ref.content_hash, split, name, settings or None)


def _score_setting(loss_on: str) -> str:
    return f"score:{loss_on}"
