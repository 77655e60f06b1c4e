"""Security defaults: safetensors only (pickle needs `allow_pickle: true`), no remote code
unless `trust_remote_code: true`, no network call with HF_HUB_OFFLINE=1 (a socket guard makes
every connect and DNS lookup fail and records it), export and report paths kept inside the
run folder, and run data escaped in the HTML report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base() -> Path:
    from finemem.models.load import resolve_model

    return Path(resolve_model("builtin:test"))


def test_pickled_weights_need_allow_pickle(base, tmp_path):
    from safetensors.torch import load_file

    from finemem.errors import UserError
    from finemem.models.load import load_model

    m = tmp_path / "pickled"
    shutil.copytree(base, m)
    sd = load_file(str(m / "model.safetensors"))
    (m / "model.safetensors").unlink()
    torch.save(sd, m / "pytorch_model.bin")
    before = sorted(p.name for p in m.iterdir())
    with pytest.raises(UserError, match="only pickled weights.*allow_pickle: true"):
        load_model(str(m), device="cpu")
    assert sorted(p.name for p in m.iterdir()) == before
    model = load_model(str(m), device="cpu", allow_pickle=True)  # the explicit opt-in
    assert sum(p.numel() for p in model.parameters()) > 0


def test_remote_code_is_never_run_unless_asked(base, tmp_path):
    """A model folder whose config asks for its own Python code: refused, the code not run."""
    from finemem.errors import UserError
    from finemem.models.load import load_model, load_tokenizer

    m = tmp_path / "remote"
    shutil.copytree(base, m)
    marker = tmp_path / "code-was-run"
    (m / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                               "from transformers import PretrainedConfig\n"
                               "class EvilConfig(PretrainedConfig):\n"
                               "    model_type = 'evil'\n")
    cfg = json.loads((m / "config.json").read_text())
    cfg.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig",
                                            "AutoModelForCausalLM": "evil.EvilModel"})
    (m / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError):
        load_model(str(m), device="cpu")
    try:
        load_tokenizer(str(m))
    except UserError:
        pass
    assert not marker.exists()


def test_export_and_report_paths_stay_inside_the_run(tmp_path):
    from finemem.errors import UserError
    from finemem.export import inside

    run = tmp_path / "run"
    run.mkdir()
    for bad in ("../escape", "../../etc", str(tmp_path / "elsewhere"), "export/../../x"):
        with pytest.raises(UserError, match="leaves the run folder"):
            inside(run, bad)
    assert inside(run, "export") == (run / "export").resolve()
    assert not (tmp_path / "escape").exists() and not (tmp_path / "elsewhere").exists()


OFFLINE_DRIVER = textwrap.dedent("""
    import io, json, socket, sys
    attempts = []

    def refuse(*a, **k):
        attempts.append(repr(a[:2])[:200])
        raise OSError("network blocked by the test")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    from finemem.cli import main
    calls = []
    for argv in json.loads(sys.argv[1]):
        sys.argv = ["finemem", *argv]
        err, sys.stderr = sys.stderr, io.StringIO()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code or 0
        text, sys.stderr = sys.stderr.getvalue(), err
        calls.append({"argv": argv, "code": code, "stderr": text[-2000:]})
    print(json.dumps({"calls": calls, "attempts": attempts}))
""")


def test_offline_mode_makes_no_network_call_and_report_escapes_data(tmp_path):
    """HF_HUB_OFFLINE=1, every socket blocked: hub ids fail with one line, a builtin run
    trains, audits, exports and reports with no connection attempted. The run folder's name
    is HTML; the report must escape it, and `--out ../` is refused."""
    run = tmp_path / "run<img src=x onerror=alert(1)>"

    def cfg(name, **over):
        c = {"run_dir": str(run), "model": "builtin:test", "device": "cpu",
             "data": {"train": {"source": "builtin:arith", "n": 8},
                      "eval": {"test": {"source": "builtin:arith", "split": "test", "n": 4}}},
             "training": {"max_steps": 1, "batch_size": 4},
             "audit": {"likelihood": {"train_sample": 4},
                       "overmem": {"diversity_prompts": 2, "k_samples": 2,
                                   "max_new_tokens": 6, "embedding_dispersion": False}}}
        c.update(over)
        (tmp_path / name).write_text(yaml.safe_dump(c))
        return str(tmp_path / name)

    hub_model = cfg("m.yaml", model="someorg/no-such-model", run_dir=str(tmp_path / "r1"))
    hub_data = cfg("d.yaml", run_dir=str(tmp_path / "r2"),
                   data={"train": {"source": "someorg/no-such-dataset"}})
    good = cfg("ok.yaml")
    argvs = [["train", "-c", hub_model], ["train", "-c", hub_data],
             ["train", "-c", good, "--no-progress"],
             ["audit", str(run), "--device", "cpu", "--quiet"],
             ["export", str(run), "--format", "json"],
             ["export", str(run), "--format", "csv", "--out", "../escape"],
             ["report", str(run)],
             ["report", str(run), "--out", "../escape"]]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("FINEMEM_")
           or k == "FINEMEM_HOME"}
    env.update(HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", OFFLINE_DRIVER, json.dumps(argvs)],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    codes = [c["code"] for c in out["calls"]]
    assert codes == [2, 2, 0, 0, 0, 2, 0, 2], out["calls"]
    for c in out["calls"]:
        assert "Traceback" not in c["stderr"], c
    assert "no-such-model" in out["calls"][0]["stderr"]
    assert "no-such-dataset" in out["calls"][1]["stderr"]
    assert "leaves the run folder" in out["calls"][5]["stderr"]
    assert "leaves the run folder" in out["calls"][7]["stderr"]
    assert out["attempts"] == [], out["attempts"]
    assert not (tmp_path / "escape").exists()
    page = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert "<img src=x onerror=alert(1)>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
