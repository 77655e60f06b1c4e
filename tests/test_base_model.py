"""The self-built base model: `test`-size build, cache reuse, a loadable HF folder."""

import json
import math

import pytest

from finemem.errors import UserError
from finemem.models.base import build_base, build_spec, lr_at, parse_builtin


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("fmhome")
    mp = pytest.MonkeyPatch()
    mp.setenv("FINEMEM_HOME", str(home))
    path = build_base("test", progress=False)
    yield home, path
    mp.undo()


def test_build_writes_a_complete_folder_under_finemem_home(built):
    home, path = built
    assert path.parent == home / "base" and path.name.startswith("test-")
    for f in ("config.json", "model.safetensors", "tokenizer.json", "finemem_base.json"):
        assert (path / f).exists(), f
    info = json.loads((path / "finemem_base.json").read_text())
    assert info["size"] == "test" and path.name == f"test-{info['hash']}"
    assert 100_000 < info["n_params"] < 1_000_000
    assert info["corpus_texts"]["arith"] > 0
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp


@pytest.mark.integration
def test_second_call_reuses_the_cache(built, monkeypatch):
    home, path = built
    monkeypatch.setenv("FINEMEM_HOME", str(home))
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    import finemem.models._pretrain as pre

    monkeypatch.setattr(pre, "build", lambda *a, **k: pytest.fail("rebuilt instead of reusing"))
    assert build_base("test", progress=False) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_folder_loads_with_auto_classes_and_round_trips_text(built):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, path = built
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    text = "Question: Mira has 17 quills.\nAnswer: Okay, we count the story.\n#### 23"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.bos_token_id is not None and tok.eos_token_id is not None
    assert tok.pad_token_id is not None
    for n in range(31):  # arith's numbers are single tokens, with and without a space
        assert len(tok(f" {n}", add_special_tokens=False)["input_ids"]) == 1, n
        assert len(tok(f"{n}", add_special_tokens=False)["input_ids"]) == 1, n
    seq = torch.tensor([[tok.bos_token_id] + ids + [tok.eos_token_id]])
    with torch.no_grad():
        out = model(input_ids=seq, labels=seq)
    assert out.logits.shape == (1, seq.shape[1], len(tok))
    assert math.isfinite(out.loss.item())


def test_spec_hash_inputs_cover_tasks_and_seeds():
    spec = build_spec("test")
    assert "arith" in spec["corpus"]["tasks"]
    assert spec["corpus"]["tasks"]["arith"]["version"] >= 1
    assert len(spec["corpus"]["sample_sha"]) == 16
    assert set(spec) == {"size", "corpus", "seeds", "tokenizer", "build_version"}
    assert build_spec("tiny")["size"] != spec["size"]


def test_spec_hash_follows_the_generated_text(monkeypatch):
    """The cache key changes when a task's pretraining text changes, not when its code does
    (the spec is computed once per process: the code cannot change under a running one)."""
    from finemem.data.tasks.arith import ArithTask
    from finemem.models import base

    def sha():
        monkeypatch.setattr(base, "_SPECS", {})
        return build_spec("test")["corpus"]["sample_sha"]

    before = sha()
    original = ArithTask.pretrain_texts
    monkeypatch.setattr(ArithTask, "pretrain_texts", lambda self, n, seed=0: original(self, n, seed))
    assert sha() == before  # same text, new code
    monkeypatch.setattr(ArithTask, "pretrain_texts",
                        lambda self, n, seed=0: [t + "!" for t in original(self, n, seed)])
    assert sha() != before


def test_the_spec_is_computed_once_per_process_and_task_set(monkeypatch):
    from finemem.models import base

    monkeypatch.setattr(base, "_SPECS", {})
    first = build_spec("test")
    monkeypatch.setattr(base, "_build_spec", lambda *a: pytest.fail("computed twice"))
    first["size"]["steps"] = -1                        # a caller's change stays its own
    assert build_spec("test")["size"]["steps"] != -1


def test_temp_folders_of_dead_builds_are_removed(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from finemem.models.base import BUILDER, _remove_dead_builds

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    owners = {".tiny-abc-dead": f"{host} {dead}", ".tiny-abc-alive": f"{host} {os.getpid()}",
              ".tiny-abc-other": f"elsewhere {dead}", ".tiny-abc-nofile": None}
    for name, owner in owners.items():
        (tmp_path / name).mkdir()
        if owner:
            (tmp_path / name / BUILDER).write_text(owner)
    (tmp_path / "tiny-abc").mkdir()  # a finished build is never touched
    _remove_dead_builds(tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".tiny-abc-alive", ".tiny-abc-nofile", ".tiny-abc-other", "tiny-abc"]


def test_lr_schedule_hand_values():
    kw = dict(lr=1.0, warmup=10, total=110, final_lr_frac=0.2)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.2 + 0.8 * 0.5)  # halfway through the cosine
    assert lr_at(110, **kw) == pytest.approx(0.2)


def test_builtin_names_and_bad_size():
    assert parse_builtin("builtin:tiny") == "tiny"
    assert parse_builtin("gpt2") is None
    with pytest.raises(UserError, match="builtin:tiny"):
        parse_builtin("builtin:huge")
    with pytest.raises(UserError, match="unknown base size"):
        build_base("huge")



def test_sizes_have_one_source():
    from finemem.models.base import SIZES, check_size
    from finemem.models.load import resolve_model

    assert check_size("tiny") == "tiny"
    with pytest.raises(UserError, match="field '--size'.*choose one of: " + ", ".join(SIZES)):
        check_size("huge", field="--size")
    with pytest.raises(UserError, match="unknown builtin model 'builtin:huge'; available: "
                       + ", ".join("builtin:" + s for s in SIZES)):
        resolve_model("builtin:huge")
