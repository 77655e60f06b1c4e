"""Moved to `finemem.models.merging` (a merged checkpoint written into RUN_DIR/merges/)."""

from finemem.models.merging import merge_run_checkpoints  # noqa: F401
