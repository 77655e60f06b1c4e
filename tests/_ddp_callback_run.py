"""Run under `torchrun --nproc_per_node 2` by tests/test_callback.py: the plain-Trainer example
on 2 CPU processes (gloo) with `stop_after_overmemorized=1` and the stage summary faked on the
main process to say "over-memorized", so the main process decides to stop at the first save.
Each process writes what it saw to OUT/rank<r>.json."""

import json
import os
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import finemem.audit as audit

out = Path(sys.argv[1])
real = audit.summarize


def fake(run_dir):
    s = real(run_dir)
    labels = [SimpleNamespace(label="over-memorized") for _ in s.labels]
    return SimpleNamespace(labels=labels, graded=True, row=s.row,
                           recommendation=s.recommendation)


audit.summarize = fake
example = runpy.run_path(str(Path(__file__).resolve().parent.parent / "examples" /
                              "hf_trainer_callback.py"))
cb = example["main"](str(out), steps=8, save_steps=4, stop_after_overmemorized=1,
                     report_to=())
rank = int(os.environ["RANK"])
(out / f"rank{rank}.json").write_text(json.dumps({
    "global_step": cb.trainer.state.global_step, "stopped_at": cb.stopped_at,
    "ship": cb.ship and cb.ship["name"]}))
# Leave without tearing gloo down: its threads can abort a process at interpreter exit
# ("terminate called without an active exception") after all the work is done, which would
# make this check flaky for a reason that is not finemem's.
import torch.distributed as dist  # noqa: E402

if dist.is_initialized():
    dist.barrier()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
