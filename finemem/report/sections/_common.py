"""What a report section reads: `RunData`, one audited run's stored results, and helpers.

    run = RunData.open(run_dir)           # opens the store; run.close() when done
    run.metric_rows(name="perplexity")    # stored per-checkpoint metrics, settings parsed
    run.example_values("step-000006", "train/mean_nll")   # per-example values of a probe
    run.generations("step-000006")        # cached greedy generations {example id: text}
    run.examples("test")                  # {example id: Example} of an eval set or "train"
    matched_pair(prompt, generated, reference)   # spans of the generation found in the truth

Everything here reads the run folder and its results store; nothing loads a model.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from finemem.run import BASE, RunFolder
from finemem.store import CheckpointRow, GenerationRecord, Store

__all__ = ["BASE", "Grid", "RunData", "ci", "interval", "last_with", "matched_pair", "num",
           "settings_text"]


@dataclass
class RunData:
    run_dir: Path
    store: Store
    config: object | None          # RunConfig, None when config.yaml cannot be read
    summary: object | None         # RunSummary, None when no stage summary can be drawn
    summary_error: str | None      # why there is no summary
    checkpoints: list[CheckpointRow]  # base (step 0) + trained checkpoints + merges
    _metrics: list[dict] = field(default_factory=list, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, run_dir: str | Path) -> "RunData":
        from finemem.analysis.summary import summarize
        from finemem.errors import UserError

        run = RunFolder(run_dir)
        run.require_results()
        try:
            config = run.config
        except UserError:
            config = None
        store = run.open_store()
        summary, error = None, None
        try:
            summary = summarize(run.path, store=store)
        except (UserError, ValueError) as e:
            error = str(e)
        if summary is None and not store.metrics(split="test", name="perplexity"):
            error = (f"the stage table needs the default probes; run `finemem audit {run.path}` "
                     "(the probes run so far do not recommend a checkpoint)")
        metrics = [r.as_dict() for r in store.metrics() if r.split != "*"]  # "*": done-keys
        return cls(run.path, store, config, summary, error, run.checkpoints(store), metrics)

    def close(self) -> None:
        self.store.close()

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name

    def checkpoint(self, name: str) -> CheckpointRow | None:
        return next((c for c in self.checkpoints if c.name == name), None)

    def content_hash(self, name: str) -> str | None:
        """The content hash of a checkpoint's weights (the key of its per-example rows); None
        for the base when its hash was never stored and its folder is gone."""
        c = self.checkpoint(name)
        return None if c is None else c.content_hash

    # metrics ---------------------------------------------------------------------------
    def metric_rows(self, *, split: str | None = None, name: str | None = None,
                    checkpoint: str | None = None) -> list[dict]:
        """Stored per-checkpoint metrics: dicts with checkpoint, split, name, key
        ("split/name"), settings (dict), setting (its JSON), value, n, lo, hi."""
        return [r for r in self._metrics
                if (split is None or r["split"] == split) and (name is None or r["name"] == name)
                and (checkpoint is None or r["checkpoint"] == checkpoint)]

    def checkpoint_order(self) -> list[str]:
        """Checkpoint names that have stored metrics, base first, then by step, merges last."""
        have = {r["checkpoint"] for r in self._metrics}
        return [c.name for c in self.checkpoints if c.name in have]

    # per-example rows ------------------------------------------------------------------
    def example_values(self, checkpoint: str, key: str, **settings) -> dict[str, float]:
        """Per-example values a probe stored with `AuditContext.put_examples` (key
        "split/name"): numbers, or strings such as the extraction probe's
        "members/generation" and "members/true_suffix"; {} when absent."""
        chash = self.content_hash(checkpoint)
        if chash is None:
            return {}
        split, _, name = key.partition("/")
        return self.store.get_values(chash, split, name, settings or None)

    def generations(self, checkpoint: str) -> dict[str, str]:
        """Cached greedy generations of a checkpoint, {example id: text} (the first setting
        that holds one continuation; sampled rows hold k). {} when absent."""
        chash = self.content_hash(checkpoint)
        if chash is None:
            return {}
        out: dict[str, str] = {}
        for eid, per_setting in self.store.generations(chash).items():
            one: list[GenerationRecord] | None = next(
                (g for g in per_setting if len(g) == 1), None)
            if one is not None:
                out[eid] = one[0].text
        return out

    def examples(self, split: str) -> dict[str, object]:
        """{example id: Example} of an eval set, or of the training data for "train"; {}
        when the data cannot be read (moved, offline)."""
        key = ("examples", split)
        if key not in self._memo:
            self._memo[key] = _load_examples(self, split)
        return self._memo[key]


def _load_examples(run: RunData, split: str) -> dict:
    from finemem.errors import UserError

    if run.config is None:
        return {}
    try:
        from finemem.models.load import load_tokenizer

        tok = load_tokenizer(str(RunFolder(run.run_dir).tokenizer_dir))
        if split == "train":
            from finemem.data.loaders import load_examples

            exs = load_examples(run.config.data.train, tokenizer=tok)
        else:
            from finemem.audit.evalsets import eval_sets

            sets = eval_sets(run.config, tok)
            exs = sets[split].examples if split in sets else []
    except (UserError, OSError, ValueError):
        return {}
    return {str(e.id): e for e in exs}


@dataclass
class Grid:
    """A table a section computes once and shows twice: in the terminal after `finemem audit`
    (`finemem.report.tables.print_grid`) and in the HTML report (the `grid(g)` macro)."""
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def ci(row: dict | None, digits: int = 3) -> str:
    """A stored metric row as 'value [lo, hi]' ('-' when absent)."""
    if row is None:
        return "-"
    if row.get("lo") is None or row.get("hi") is None:
        return num(row["value"], digits)
    return f"{num(row['value'], digits)} [{num(row['lo'], digits)}, {num(row['hi'], digits)}]"


def last_with(run: RunData, **filters) -> str | None:
    """The last checkpoint (in training order, merges last) with a metric matching `filters`."""
    have = {r["checkpoint"] for r in run.metric_rows(**filters)}
    order = [c for c in run.checkpoint_order() if c in have]
    return order[-1] if order else None


# formatting helpers ------------------------------------------------------------------------
def num(v, digits: int = 3) -> str:
    """A number for a table: `digits` decimals below 100, one decimal below 1000, else
    scientific; '-' for None or NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    a = abs(v)
    if a == 0 or 0.001 <= a < 100:
        return f"{v:.{digits}f}"
    if 100 <= a < 1000:
        return f"{v:.1f}"
    return f"{v:.{digits}g}"


def interval(row: dict | None) -> str:
    """A stored metric row as 'value [lo, hi] n=N' (the parts it has)."""
    if row is None:
        return "-"
    out = num(row["value"])
    if row.get("lo") is not None and row.get("hi") is not None:
        out += f" [{num(row['lo'])}, {num(row['hi'])}]"
    if row.get("n") is not None:
        out += f" n={row['n']}"
    return out


def settings_text(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))


_TOKEN = re.compile(r"\s+|\S+\s*")  # leading whitespace, then words with their trailing space


def matched_pair(prompt: str, generated: str, reference: str) -> dict:
    """A generation beside its true suffix, split into segments that the template highlights
    when the same words occur, in the same order, in the other text (difflib over words;
    whitespace is kept with the word before it and ignored when matching).

    Returns {"prompt", "generated": [(text, matched)], "reference": [(text, matched)],
    "matched_fraction": share of the reference's non-space characters matched, "exact"}.

    >>> matched_pair("", "a b <c>", "a <c> d")["generated"]
    [('a ', True), ('b ', False), ('<c>', True)]
    """
    g, r = _TOKEN.findall(generated or ""), _TOKEN.findall(reference or "")
    sm = difflib.SequenceMatcher(a=[t.strip() for t in g], b=[t.strip() for t in r],
                                 autojunk=False)
    g_on, r_on = [False] * len(g), [False] * len(r)
    for a, b, size in sm.get_matching_blocks():
        for k in range(size):
            if g[a + k].strip():
                g_on[a + k] = r_on[b + k] = True
    ref_chars = sum(len(t.strip()) for t in r) or 1
    hit = sum(len(t.strip()) for t, on in zip(r, r_on) if on)
    return {"prompt": prompt, "generated": _segments(g, g_on), "reference": _segments(r, r_on),
            "matched_fraction": hit / ref_chars,
            "exact": (generated or "").strip() == (reference or "").strip()}


def _segments(tokens: list[str], on: list[bool]) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for t, m in zip(tokens, on):
        if out and out[-1][1] == m:
            out[-1] = (out[-1][0] + t, m)
        else:
            out.append((t, m))
    return out
