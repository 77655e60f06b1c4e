"""Crash safety: `finemem train`, then `finemem audit` with every probe that works on the run,
killed with SIGKILL at seeded points, rerun, and compared with an uninterrupted run.

The kill points are the fault points of `finemem.faults` (training steps, checkpoint writing,
the resume-state swap, store transactions, scoring, generation, a probe's done-key). An
uninterrupted reference run logs every point it passes; the kills are drawn (seeded) from
those occurrences, per phase, and replayed in a chain on one run folder: each launch of the
command is killed at the next planned point, until the plan is used up and a last launch
completes. After every kill: no checkpoint folder without its metadata, resume state pointing
at a complete checkpoint, `PRAGMA integrity_check` ok. At the end: the same checkpoints
byte for byte, and the same rows (train log, checkpoints, metrics, per-example rows) as the
reference, none missing and none extra.

Quick form (in `make test`): 11 planned kills, at least 10 must land. Long form:
FINEMEM_LONG=1: three more seeded runs (two full, one LoRA), each with up to 20 planned kills
(the draws are capped by how often the reference passes each point). FINEMEM_KILL_SEED
replays another seed in the quick form.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
LONG = os.environ.get("FINEMEM_LONG") == "1"
SEED = int(os.environ.get("FINEMEM_KILL_SEED", "1414"))

# kills per phase of each command (quick form); the long form multiplies them
TRAIN_PLAN = {"train_step": 3, "ckpt_write": 2, "state_swap": 2, "store_write": 1}
AUDIT_PLAN = {"score": 1, "generate": 1, "store_write": 1}
LONG_AUDIT_PLAN = {"score": 2, "generate": 2, "store_write": 2, "probe_done": 2}
# small settings for the probes that exist (each used only when its probe is registered)
SMALL_AUDIT = {"likelihood": {"train_sample": 4},
               "overmem": {"diversity_prompts": 2, "k_samples": 2, "max_new_tokens": 8,
                           "embedding_dispersion": False},
               "extraction": {"members": 6, "nonmembers": 4, "prefix_tokens": 4,
                              "suffix_tokens": 8},
               "membership": {"members": 6, "nonmembers": 4, "n_boot": 100},
               "attention": {"bootstrap": 100}}


def small_audit() -> dict:
    from finemem.audit.probes import probe_names

    return {k: v for k, v in SMALL_AUDIT.items() if k in probe_names()}


def run_config(run_dir: Path, method: str = "full") -> dict:
    return {"run_dir": str(run_dir), "model": "builtin:test", "device": "cpu",
            "data": {"train": {"source": "builtin:arith", "n": 12},
                     "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 4}}},
            "training": {"method": method, "epochs": 2, "lr": 2e-3, "batch_size": 4,
                         "save_every": 3, "lora": {"r": 4, "alpha": 8, "dropout": 0.1}},
            "audit": small_audit()}


class Launcher:
    """Runs `finemem` commands as forked children of one warm process (torch, transformers
    and finemem imported once: about 5 s saved per launch). Each child gets its own
    environment, working folder and fault points, calls `finemem.cli.main()` like the
    console script, and its exit status (negative: killed by that signal) comes back."""

    def __init__(self):
        self.p = subprocess.Popen([sys.executable, __file__, "serve"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)

    def run(self, args: list[str], *, log: Path, kill: str | None = None, cwd: Path,
            env_extra: dict | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINEMEM_") or
               k == "FINEMEM_HOME"}
        env["FINEMEM_FAULT_LOG"] = str(log)
        if kill:
            env["FINEMEM_KILL_AT"] = kill
        env.update(env_extra or {})
        out = log.with_suffix(".out")
        t0 = time.monotonic()
        self.p.stdin.write(json.dumps({"args": args, "env": env, "cwd": str(cwd),
                                       "out": str(out)}) + "\n")
        self.p.stdin.flush()
        rc = int(self.p.stdout.readline())
        print(f"{args[0]} kill={kill}: rc {rc} in {time.monotonic() - t0:.1f} s")
        text = out.read_text(errors="replace") if out.is_file() else ""
        return subprocess.CompletedProcess(args, rc, stdout="", stderr=text)

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


def serve() -> None:
    """The launcher's loop: one JSON request a line on stdin, one exit status a line out."""
    import importlib

    import accelerate  # noqa: F401  (imported once, before the forks)
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import finemem.audit.loop  # noqa: F401
    import finemem.cli
    import finemem.faults
    import finemem.train.loop  # noqa: F401
    from finemem.audit.probes import load_probes

    load_probes()  # every child runs the same probe code, even while the files change

    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: become `finemem <args>`
            code = 1
            try:
                os.chdir(req["cwd"])
                os.environ.clear()
                os.environ.update(req["env"])
                importlib.reload(finemem.faults)
                fd = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                sys.argv = ["finemem", *req["args"]]
                try:
                    finemem.cli.main()
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        sys.stdout.write(f"{rc}\n")
        sys.stdout.flush()


def all_probes() -> tuple[list[str], list[str]]:
    """(default probes, the others) from the registry, as `finemem probes` lists them."""
    from finemem.audit.probes import get_probe, probe_names

    names = list(probe_names())
    return ([n for n in names if get_probe(n).default],
            [n for n in names if not get_probe(n).default])


def events(log: Path) -> list[str]:
    return log.read_text().split() if log.is_file() else []


def plan_kills(ref_events: list[str], plan: dict[str, int], rng: random.Random
               ) -> list[tuple[str, int]]:
    """(phase, occurrence) targets, drawn from the reference's occurrences of each phase, in
    the order the reference passed them."""
    where: dict[str, list[int]] = {}
    for i, ph in enumerate(ref_events):
        where.setdefault(ph, []).append(i)
    out = []
    for phase, k in plan.items():
        occ = where.get(phase, [])
        for j in sorted(rng.sample(range(1, len(occ) + 1), min(k, len(occ)))):
            out.append((occ[j - 1], phase, j))
    return [(ph, j) for _, ph, j in sorted(out)]


def check_after_kill(run: Path) -> None:
    ck = run / "checkpoints"
    if ck.is_dir():
        for d in ck.glob("step-*"):
            assert (d / "finemem_ckpt.json").is_file(), f"half-written checkpoint {d.name}"
    ts = run / "state" / "trainer_state.json"
    if ts.is_file():
        name = json.loads(ts.read_text())["checkpoint"]
        assert (ck / name / "finemem_ckpt.json").is_file(), f"state points at {name}"
    if (run / "results.sqlite").is_file():
        assert integrity(run) == "ok"


def integrity(run: Path) -> str:
    db = sqlite3.connect(run / "results.sqlite")
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def dump(run: Path) -> dict:
    """Every row a run's store holds that does not name its folder or a time."""
    db = sqlite3.connect(run / "results.sqlite")
    try:
        q = {"train_log": "SELECT step, epoch, loss, lr FROM train_log",
             "checkpoints": "SELECT name, step, epoch, kind, content_hash FROM checkpoints",
             "metrics": "SELECT checkpoint, split, name, setting, value, n, lo, hi FROM metrics",
             "examples": "SELECT ckpt_hash, example_id, setting, kind, data FROM "
                         "example_results",
             "status": "SELECT status FROM runs"}
        return {k: sorted(db.execute(s).fetchall(), key=repr) for k, s in q.items()}
    finally:
        db.close()


# Known and reported: the extraction probe memoizes sentence embeddings across checkpoints,
# so after a resume a text can be embedded in another batch (other padding): its cosine
# moves in the 8th digit. Those metrics alone are compared to 1e-6; all others exactly.
EMBEDDING_METRICS = {"embedding_cosine"}


def compare_metrics(got: list, want: list) -> None:
    g = {r[:4]: r[4:] for r in got}
    w = {r[:4]: r[4:] for r in want}
    assert g.keys() == w.keys(), (f"missing {sorted(w.keys() - g.keys())[:5]}, "
                                  f"extra {sorted(g.keys() - w.keys())[:5]}")
    differ = [k for k in w if g[k] != w[k]]
    loose = [k for k in differ if k[2] in EMBEDDING_METRICS and
             all(a == b or abs(a - b) <= 1e-6 * max(1.0, abs(b))
                 for a, b in zip(g[k], w[k]) if a is not None and b is not None)]
    strict = [(k, g[k], w[k]) for k in differ if k not in loose]
    assert not strict, f"{len(strict)} metrics differ after the kills: {strict[:8]}"
    if loose:
        print(f"{len(loose)} embedding metrics differ below 1e-6: {loose[:4]}")


def _close(a: str | bytes, b: str | bytes) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return abs(x - y) <= 1e-6 * max(1.0, abs(y))


def compare_examples(got: list, want: list) -> None:
    g = {r[:4]: r[4] for r in got}
    w = {r[:4]: r[4] for r in want}
    assert g.keys() == w.keys(), (f"missing {sorted(w.keys() - g.keys())[:5]}, "
                                  f"extra {sorted(g.keys() - w.keys())[:5]}")
    differ = [k for k in w if g[k] != w[k]]
    strict = [k for k in differ if not (any(m in k[2] for m in EMBEDDING_METRICS)
                                         and _close(g[k], w[k]))]
    assert not strict, f"{len(strict)} per-example rows differ after the kills: {strict[:8]}"
    if differ:
        print(f"{len(differ)} per-example embedding rows differ below 1e-6")


def weights(run: Path) -> dict[str, str]:
    return {d.name: json.loads((d / "finemem_ckpt.json").read_text())["content_hash"]
            for d in sorted((run / "checkpoints").glob("step-*"))}


def chain(fm: Launcher, args, run: Path, targets, root: Path, tag: str) -> list[str]:
    """Launch `args` again and again, killed at each target in turn, then once more to the
    end. Returns the phases the kills landed on."""
    seen: Counter = Counter()
    landed = []
    for i, (phase, j) in enumerate(targets):
        n = max(1, j - seen[phase])
        log = root / f"{tag}-{i}.log"
        r = fm.run(args, log=log, kill=f"{phase}:{n}", cwd=root)
        seen.update(events(log))
        if r.returncode == 0:  # the run finished before reaching this point
            break
        assert r.returncode == -9, (phase, n, r.returncode, r.stderr[-2000:])
        assert events(log)[-1] == phase
        landed.append(phase)
        check_after_kill(run)
    r = fm.run(args, log=root / f"{tag}-end.log", cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    return landed


def working_probes(run: Path) -> list[str]:
    """The default probes plus every other registered probe whose preparation accepts this
    run (e.g. `canaries` needs a run trained with canaries)."""
    from finemem.audit import loop
    from finemem.audit.probes import resolve_probes
    from finemem.errors import UserError

    default, extra = all_probes()
    ok = list(default)
    for p in extra:
        cfg = loop.open_run(run)
        try:
            ctx, _, _ = loop._open(run, cfg, cfg.audit, resolve_probes(default + [p]))
            ctx.store.close()
            ok.append(p)
        except UserError as e:
            print(f"probe {p} does not apply to the test run: {e}")
    return ok


def reference(fm: Launcher, root: Path, method: str):
    """An uninterrupted run: (run folder, train events, audit events, probes audited)."""
    run, cfg = root / "ref", root / "ref.yaml"
    cfg.write_text(yaml.safe_dump(run_config(run, method)))
    tlog, alog = root / "ref-train.log", root / "ref-audit.log"
    r = fm.run(["train", "-c", str(cfg), "--no-progress"], log=tlog, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    probes = working_probes(run)
    r = fm.run(["audit", str(run), "--device", "cpu", "--quiet", "--probes", ",".join(probes)],
               log=alog, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    return run, events(tlog), events(alog), probes


def kill_and_compare(fm: Launcher, root: Path, seed: int, method: str, long: bool) -> int:
    rng = random.Random(seed)
    ref, train_ev, audit_ev, probes = reference(fm, root, method)
    run = root / "crash"
    cfg = root / "crash.yaml"
    cfg.write_text(yaml.safe_dump(run_config(run, method)))
    tplan = {k: v * (2 if long else 1) for k, v in TRAIN_PLAN.items()}
    aplan = LONG_AUDIT_PLAN if long else AUDIT_PLAN
    landed = chain(fm, ["train", "-c", str(cfg), "--no-progress"], run,
                   plan_kills(train_ev, tplan, rng), root, "train")
    landed += chain(fm, ["audit", str(run), "--device", "cpu", "--quiet", "--probes",
                         ",".join(probes)], run, plan_kills(audit_ev, aplan, rng), root,
                    "audit")
    # no half-written checkpoint or state left, the same weights, the same rows
    assert not list(run.glob("checkpoints/.tmp-*")) and not (run / "state.tmp").exists()
    assert weights(run) == weights(ref)
    assert integrity(run) == "ok"
    got, want = dump(run), dump(ref)
    for table in want:
        if table == "metrics":
            compare_metrics(got[table], want[table])
        elif table == "examples":
            compare_examples(got[table], want[table])
        else:
            assert got[table] == want[table], f"{table} differs after the kills"
    print(f"seed {seed} {method}: {len(landed)} kills survived: {dict(Counter(landed))}; "
          f"probes {probes}")
    return len(landed)


@pytest.fixture(scope="module")
def fm():
    launcher = Launcher()
    yield launcher
    launcher.close()


def test_kill_at_seeded_points_then_resume_gives_the_same_results(fm, tmp_path):
    assert kill_and_compare(fm, tmp_path, SEED, "full", long=False) >= 10


def test_ctrl_c_exits_130_names_the_step_and_the_run_resumes(fm, tmp_path):
    """Ctrl-C (SIGINT) at step 4 of 6: exit 130 with "interrupted at step 4 of 6; rerun to
    resume (from step-000003 ...)"; audit and recommend say the run is incomplete; the rerun
    finishes with the weights of an uninterrupted run."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    for r in (ref, run):
        (tmp_path / f"{r.name}.yaml").write_text(yaml.safe_dump(run_config(r)))
    train = ["train", "-c", str(tmp_path / "run.yaml"), "--no-progress"]
    r = fm.run(train, log=tmp_path / "a.log", cwd=tmp_path,
               env_extra={"FINEMEM_INT_AT": "train_step:4"})
    assert r.returncode == 130, r.stderr[-2000:]
    assert "interrupted at step 4 of 6; rerun to resume (from step-000003" in r.stderr
    assert "Traceback" not in r.stderr
    check_after_kill(run)
    r = fm.run(["audit", str(run), "--device", "cpu", "--quiet", "--probes", "likelihood"],
               log=tmp_path / "b.log", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "incomplete: training stopped at step 3 of 6" in r.stderr
    r = fm.run(["recommend", str(run)], log=tmp_path / "c.log", cwd=tmp_path)
    assert r.returncode == 0 and "incomplete: training stopped at step 3 of 6" in r.stderr
    assert fm.run(train, log=tmp_path / "d.log", cwd=tmp_path).returncode == 0
    assert fm.run(["train", "-c", str(tmp_path / "ref.yaml"), "--no-progress"],
                  log=tmp_path / "e.log", cwd=tmp_path).returncode == 0
    assert weights(run) == weights(ref) and len(weights(run)) == 2
    r = fm.run(["recommend", str(run)], log=tmp_path / "f.log", cwd=tmp_path)
    assert "incomplete" not in r.stderr


def test_ctrl_c_swallowed_by_a_finalizer_still_stops_at_the_next_unit_of_work():
    """Python ignores an exception raised inside `__del__` ("Exception ignored ..."), so a
    Ctrl-C landing there used to let the command run on and exit 0. The CLI's handler
    remembers the Ctrl-C and the next unit-of-work point raises it again."""
    script = """
import os, signal
from finemem import faults
faults.install_sigint()
class Res:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C while a finalizer runs
        for _ in range(10**6): pass           # the handler runs here; Python swallows it
Res()                                         # finalized at once
print("ran on", flush=True)
faults.point("store_write")                   # cleanup points are left alone
print("cleanup ok", flush=True)
try:
    faults.point("score")
except KeyboardInterrupt:
    print("stopped at score", flush=True)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60, env={k: v for k, v in os.environ.items()
                                        if not k.startswith("FINEMEM_")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ran", "on", "cleanup", "ok", "stopped", "at", "score"]
    assert "KeyboardInterrupt" in r.stderr  # Python's own "Exception ignored" report


@pytest.mark.skipif(not LONG, reason="long form: FINEMEM_LONG=1")
@pytest.mark.parametrize("seed,method", [(1, "full"), (2, "lora"), (3, "full")])
def test_kill_long_form(fm, tmp_path, seed, method):
    assert kill_and_compare(fm, tmp_path, seed, method, long=True) >= 10


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    serve()
