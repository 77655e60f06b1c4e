"""The over-memorization audit: score every checkpoint of a run, store the metrics, label
stages and recommend a checkpoint.

    finemem audit RUN_DIR        -> audit_run(run_dir)
    finemem recommend RUN_DIR    -> summarize(run_dir).recommendation
"""

from finemem.audit.run import audit_run
from finemem.audit.summary import RunSummary, summarize

__all__ = ["audit_run", "summarize", "RunSummary"]
