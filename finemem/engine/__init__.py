"""finemem.engine: the one place that runs models. Every metric gets its numbers from here.

Usage:
    from finemem import engine
    for ref, model in engine.iter_models(run_dir):
        scores = engine.score_cached(store, ref.content_hash, "ppl", model, ids, pairs)
        gens = engine.generate(model, tok, prompts, max_new_tokens=64)

  * `score`: one teacher-forced pass per (context, target) pair -> `TokenScores` (log p,
    argmax-correct flags, entropy, Min-K%++ mean/std) and the scores derived from them,
    including exact greedy extractability without generating;
  * `generate`: batched, KV-cached greedy and seeded sampling -> `Generation`s;
  * `load_run_checkpoints` / `iter_models`: the base (step 0) and every checkpoint of a run,
    swapping LoRA adapters or heads instead of reloading;
  * `score_cached` / `generate_cached` / `attention_cached`: the same (and the attention
    statistics of `engine.attention`), cached per example in the results store;
  * `score_shared`: many requests' pairs in one pass per distinct token sequence, written to
    the same cache (`engine.share`).
"""

from finemem.engine.cache import attention_cached, generate_cached, id_seed, score_cached
from finemem.engine.checkpoints import (CheckpointRef, adapter_off, iter_models, list_merges,
                                        load_run_checkpoints)
from finemem.engine.generate import Generation, generate
from finemem.engine.score import TokenScores, large_model, score
from finemem.engine.share import GenerationRequest, ScoreRequest, generate_shared, score_shared

__all__ = ["CheckpointRef", "adapter_off", "attention_cached", "Generation", "GenerationRequest",
           "ScoreRequest", "TokenScores", "generate", "generate_cached", "generate_shared",
           "id_seed", "iter_models", "large_model", "list_merges", "load_run_checkpoints",
           "score", "score_cached", "score_shared"]
