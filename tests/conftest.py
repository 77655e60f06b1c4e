# The doctests are collected from finemem/ (pyproject: --doctest-modules); the helper scripts
# here (`_*.py`: subprocess entry points, fixtures' writers) are not test modules.
collect_ignore_glob = ["_*.py"]


def pytest_configure(config):
    # The tests parse run configs directly, as the CLI does: the probes' settings (a config's
    # `audit:` sections) are registered first (finemem.config.PROBE_SETTINGS).
    from finemem.audit.probes import load_probes

    load_probes()
