"""Metrics: pure functions of arrays and strings; none of them touches a model.

Usage:
    from finemem.metrics import perplexity, get_metric
    perplexity(token_logprobs)                      # float
    get_metric("self_bleu").more_memorized_when     # 'higher'

Naming rule (as in scikit-learn): a name ending in ``_score`` is higher-better; a name ending in
``_loss`` or ``_error`` is lower-better. Other names (``perplexity``, ``distinct_n``) carry their
direction in the registry only: reports read ``higher_is_better`` from `get_metric(name)`,
never from the name. `register_metric` refuses a suffix that contradicts the flag.

Which direction means "more memorized" is the registry field ``more_memorized_when``. It is
stated for the metric measured on **training (member) examples**, or on the model's own samples
for the diversity metrics:
- likelihood: lower NLL / perplexity on a training target = more memorized;
- greedy match: higher token accuracy, exact extraction, leading match, extraction strength =
  more memorized;
- diversity: lower distinct-n, fewer distinct answers, lower embedding dispersion, higher
  self-BLEU = more memorized (the model keeps producing one wording);
- answer accuracy, pass@k and calibration: None (they measure the task, not memorization).
On **held-out reference solutions** the over-memorization signal of paper 1 reads the other way:
test perplexity *rises* while accuracy stays high (see `finemem.analysis.stages`).

Every registered metric returns a Python number, does not depend on the order of the examples,
and on degenerate input (no examples, no tokens, fewer than 2 samples) warns and returns nan.
Intervals for reported numbers come from `finemem.metrics.stats`.
"""

from finemem.metrics.answers import accuracy_drop, answer_accuracy, answers_match, extract_answer, normalize_answer
from finemem.metrics.calibration import brier_score_loss, expected_calibration_error
from finemem.metrics.diversity import (distinct_answers, distinct_n, embed_texts,
                                       embedding_dispersion, entropy_from_probs,
                                       first_token_entropy,
                                       load_sentence_encoder, mean_pass_at_k, pass_at_k,
                                       self_bleu)
from finemem.metrics.likelihood import (exact_greedy_extractable, extraction_strength,
                                        leading_match_length, mean_nll, perplexity,
                                        pooled_perplexity, sum_nll,
                                        token_accuracy, zlib_length)
from finemem.metrics.registry import METRICS, MetricInfo, get_metric, metric_names, register_metric
from finemem.metrics.stats import MIN_N_FOR_CLAIM, Rate, bootstrap_ci, wilson_interval

__all__ = [
    "METRICS", "MIN_N_FOR_CLAIM", "MetricInfo", "Rate", "accuracy_drop", "answer_accuracy", "answers_match",
    "bootstrap_ci", "brier_score_loss", "distinct_answers", "distinct_n", "embed_texts",
    "embedding_dispersion", "entropy_from_probs", "exact_greedy_extractable",
    "expected_calibration_error", "extract_answer", "extraction_strength", "first_token_entropy", "get_metric",
    "leading_match_length", "load_sentence_encoder", "mean_nll", "mean_pass_at_k",
    "metric_names", "normalize_answer", "pass_at_k", "perplexity", "pooled_perplexity", "register_metric",
    "self_bleu", "sum_nll", "token_accuracy", "wilson_interval", "zlib_length",
]
