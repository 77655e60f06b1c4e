# The doctests are collected from finemem/ (pyproject: --doctest-modules); the helper scripts
# here (`_*.py`: subprocess entry points, fixtures' writers) are not test modules.
collect_ignore_glob = ["_*.py"]
