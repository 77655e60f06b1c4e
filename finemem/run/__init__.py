"""The run folder and everything stored in it, below the engine, the audit and the report.

    from finemem.run import RunFolder
    run = RunFolder("runs/demo")
    cfg = run.config                           # parsed once per process
    with run.open_store() as store:            # finemem.store.Store
        rows = store.metrics(split="test")     # MetricRow records

`folder` owns the layout and the config, `checkpoints` the checkpoint format; the results
store is `finemem.store` (the one module that runs SQL).
"""

from finemem.run.folder import BASE, RunFolder, read_config  # noqa: F401
