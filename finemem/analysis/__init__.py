"""Analysis of finished runs: stage labels, checkpoint recommendation, checkpoint merging."""
