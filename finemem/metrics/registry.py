"""Registry of finemem metrics, with the metadata reports read instead of hard-coding it.

Usage:
    from finemem.metrics.registry import get_metric, register_metric
    info = get_metric("perplexity")
    value = info.fn(token_logprobs)          # float
    info.higher_is_better, info.more_memorized_when, info.kind, info.inputs

Adding a metric is one decorator on a function of arrays (data first, options keyword-only):

    @register_metric("distinct_n", higher_is_better=True, more_memorized_when="lower",
                     kind="value", inputs="texts")
    def distinct_n(texts, *, n=2): ...

Metadata:
- `higher_is_better`: the direction of quality, as in lm-eval. Names ending in `_score` must be
  higher-better and names ending in `_loss` / `_error` lower-better; the decorator refuses a
  contradiction (see the naming rule in `finemem.metrics`).
- `more_memorized_when`: "higher", "lower" or None (the metric says nothing about memorization).
  It describes the metric measured on the *training* (member) examples or on the model's own
  samples; see `finemem.metrics` for the opposite reading on held-out references.
- `kind`: "rate" when the value is the mean of one 0/1 outcome per example (a Wilson interval
  with n = number of examples applies), "value" otherwise (use a bootstrap over examples).
- `inputs`: what the data arguments are, one of `INPUT_KINDS` (used by the property tests and by
  callers that dispatch on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from finemem.errors import UserError, unknown_name

INPUT_KINDS = {
    "token_logprobs": "list of 1-D float arrays, per-token log p(target), one per example",
    "correct_flags": "list of 1-D bool arrays, argmax == target per token, one per example",
    "texts": "list of strings (e.g. N samples for one prompt)",
    "answers": "list of extracted final answers (str or None)",
    "pred_ref": "two aligned lists: predicted answers (str or None) and reference answers",
    "embeddings": "(n, d) float array",
    "confidence_correct": "two aligned arrays: confidences in [0, 1] and 0/1 correctness",
    "pass_counts": "two aligned int arrays: samples drawn n_i and correct samples c_i, per problem",
    "values": "1-D float array, one value per example (e.g. first-token entropies)",
    "flag_sets": "two 1-D bool arrays: correct flags on a clean set and on its variant",
    "score_sets": "two 1-D float arrays: per-example scores of members and of non-members",
    "text_sets": "two lists of strings: member texts and non-member texts (not aligned)",
    "text_pairs": "two aligned lists of strings: generated texts and their references",
    "embedding_pairs": "two aligned (n, d) float arrays: embeddings of generated and reference texts",
    "value_pairs": "two aligned 1-D float arrays, one value of each per example",
    "labels": "list of category labels, one per generation (e.g. 'verbatim', 'none')",
}
KINDS = ("rate", "value")
MEMORIZED_DIRECTIONS = ("higher", "lower", None)


@dataclass(frozen=True)
class MetricInfo:
    name: str
    fn: Callable[..., float]
    higher_is_better: bool
    more_memorized_when: str | None
    kind: str
    inputs: str

    @property
    def doc(self) -> str:
        """First line of the metric's docstring (for tables and `--help`)."""
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


METRICS: dict[str, MetricInfo] = {}


def register_metric(name: str, *, higher_is_better: bool, more_memorized_when: str | None,
                    kind: str = "value", inputs: str):
    """Register `fn` under `name` with its direction metadata (see module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"metric '{name}': kind must be one of {KINDS}, got {kind!r}")
    if more_memorized_when not in MEMORIZED_DIRECTIONS:
        raise ValueError(f"metric '{name}': more_memorized_when must be one of "
                         f"{MEMORIZED_DIRECTIONS}, got {more_memorized_when!r}")
    if inputs not in INPUT_KINDS:
        raise ValueError(f"metric '{name}': inputs must be one of {sorted(INPUT_KINDS)}, "
                         f"got {inputs!r}")
    if name.endswith("_score") and not higher_is_better:
        raise ValueError(f"metric '{name}': names ending in '_score' are higher-better; "
                         "rename it '*_loss' or '*_error'")
    if name.endswith(("_loss", "_error")) and higher_is_better:
        raise ValueError(f"metric '{name}': names ending in '_loss'/'_error' are lower-better; "
                         "rename it '*_score'")

    def deco(fn: Callable[..., float]) -> Callable[..., float]:
        if name in METRICS and METRICS[name].fn is not fn:
            raise ValueError(f"metric '{name}' is already registered by "
                             f"{METRICS[name].fn.__module__}.{METRICS[name].fn.__name__}")
        METRICS[name] = MetricInfo(name=name, fn=fn, higher_is_better=higher_is_better,
                                   more_memorized_when=more_memorized_when, kind=kind,
                                   inputs=inputs)
        return fn
    return deco


def get_metric(name: str) -> MetricInfo:
    """Look up a registered metric; an unknown name raises `UserError` with the closest match."""
    _load_builtin()
    if name not in METRICS:
        raise unknown_name("metric", name, METRICS, field="metric")
    return METRICS[name]


def metric_names() -> list[str]:
    _load_builtin()
    return sorted(METRICS)


def _load_builtin() -> None:
    """Import every module of `finemem.metrics`: each registers its metrics on import, so
    adding a metric module is adding a file."""
    from finemem.registry import import_modules

    import_modules("finemem.metrics")
