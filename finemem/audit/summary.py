"""Moved to `finemem.analysis.summary` (stored metrics -> stages and the recommendation); these
names stay importable from here."""

from finemem.analysis.summary import (ACC, BASE, PPL, Row, RunSummary,  # noqa: F401
                                      parse_setting, rule_from, summarize)
