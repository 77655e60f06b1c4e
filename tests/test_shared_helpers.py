"""Helpers defined once and shared: unknown_name, pad_id, untie_head, checkpoint listing and
the checkpoint-mismatch errors."""

import json

import pytest
import torch

from finemem.errors import UserError, unknown_name
from finemem.models.load import pad_id, untie_head
from finemem.train import checkpoint as ck


def test_unknown_name_message_with_and_without_hint():
    e = unknown_name("metric", "perplexty", ["exact_match", "perplexity", "accuracy"],
                     field="metric")
    assert isinstance(e, UserError)
    assert e.message == ("Unknown metric 'perplexty'. Did you mean: perplexity? "
                         "Available: accuracy, exact_match, perplexity")
    assert str(e) == "field 'metric': " + e.message
    e = unknown_name("task", "zzz", {"arith": 1, "qa": 2})  # any iterable of names
    assert str(e) == "Unknown task 'zzz'. Available: arith, qa"


def test_get_metric_and_get_task_use_it():
    from finemem.data.tasks import get_task
    from finemem.metrics.registry import get_metric

    with pytest.raises(UserError, match=r"^field 'metric': Unknown metric 'perplexty'\. Did "
                                        r"you mean: perplexity\? Available: "):
        get_metric("perplexty")
    with pytest.raises(UserError, match=r"^field 'task': Unknown task 'arth'\. Did you mean: "
                                        r"arith\? Available: "):
        get_task("arth")


class _Tok:
    def __init__(self, pad, eos):
        self.pad_token_id, self.eos_token_id = pad, eos


def test_pad_id_fallbacks():
    assert pad_id(_Tok(3, 2)) == 3
    assert pad_id(_Tok(0, 2)) == 0      # 0 is a real pad id, not "missing"
    assert pad_id(_Tok(None, 2)) == 2   # the eos, as load_tokenizer sets it
    assert pad_id(_Tok(None, None)) == 0
    assert pad_id(object()) == 0


def _tiny(tie: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tie)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def test_untie_head_once_for_training_and_engine():
    from finemem.train import methods

    assert methods.untie_head is untie_head  # one definition
    m = _tiny(tie=True)
    emb = m.get_input_embeddings().weight.detach().clone()
    assert untie_head(m) is True
    assert m.get_output_embeddings().weight is not m.get_input_embeddings().weight
    assert not m.config.tie_word_embeddings
    with torch.no_grad():
        m.get_output_embeddings().weight.zero_()
    assert torch.equal(m.get_input_embeddings().weight, emb)
    assert untie_head(m) is False
    assert untie_head(_tiny(tie=False)) is False


def _ckpt(root, name, **meta):
    d = root / name
    d.mkdir(parents=True)
    if meta:
        (d / ck.CKPT_META).write_text(json.dumps(meta))
    return d


def test_list_checkpoints_by_step_or_name_and_list_merges(tmp_path):
    from finemem.engine import list_merges

    root = tmp_path / "checkpoints"
    _ckpt(root, "step-000100", step=100, epoch=1.0, kind="head", base_model="b",
          content_hash="h100")
    _ckpt(root, "step-000020", step=20, epoch=0.2, kind="head", base_model="b",
          content_hash="h20")
    _ckpt(root, "step-000040")  # no metadata: not complete
    assert [c["name"] for c in ck.list_checkpoints(root)] == ["step-000020", "step-000100"]
    assert ck.read_checkpoint_meta(root / "step-000040") is None

    merges = tmp_path / "merges"
    _ckpt(merges, "merge-b", step=10, epoch=0.1, kind="full", base_model="b", content_hash="x")
    _ckpt(merges, "merge-a", step=90, epoch=0.9, kind="full", base_model="b", content_hash="y")
    _ckpt(merges, ".merge-c.tmp-1")  # a merge still being written
    refs = list_merges(tmp_path)
    assert [(r.name, r.step, r.epoch, r.kind, r.content_hash) for r in refs] == [
        ("merge-a", 90, 0.9, "full", "y"), ("merge-b", 10, 0.1, "full", "x")]
    assert list_merges(tmp_path / "nowhere") == []


def test_engine_uses_the_writer_s_names():
    from finemem.engine import checkpoints as eng

    assert eng.HEAD_KEY is ck.HEAD_KEY
    assert not hasattr(eng, "CKPT_META") or eng.CKPT_META is ck.CKPT_META


def test_checkpoint_mismatch_is_a_user_error(tmp_path):
    from safetensors.torch import save_file

    m = _tiny(tie=False)
    d = tmp_path / "step-000001"
    d.mkdir()
    save_file({"not.a.weight": torch.zeros(2)}, str(d / "model.safetensors"))
    with pytest.raises(UserError, match="checkpoint does not match the model") as e:
        ck.load_checkpoint_weights(m, d, "full")
    assert str(e.value).startswith(str(d))


def test_a_registry_imports_every_public_module_of_its_package(tmp_path, monkeypatch):
    """Tasks, probes, metrics, report sections and experiments all use `import_modules`, so
    adding one is dropping a file into the package; modules named `_x` are left alone."""
    import sys

    from finemem.registry import import_modules

    pkg = tmp_path / "fm_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("SEEN = []\n")
    (pkg / "new_task.py").write_text("from fm_plugins import SEEN\nSEEN.append('new_task')\n")
    (pkg / "_helper.py").write_text("raise RuntimeError('private modules are not imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_modules("fm_plugins")
    import_modules("fm_plugins")  # idempotent
    assert sys.modules["fm_plugins"].SEEN == ["new_task"]
    monkeypatch.delitem(sys.modules, "fm_plugins")
    monkeypatch.delitem(sys.modules, "fm_plugins.new_task")


def test_task_registry_discovers_its_modules():
    from finemem.data.tasks import TASKS, task_names

    assert task_names() == ["arith", "dialog", "qa", "records", "sentiment", "summarize",
                            "translate"]
    assert {TASKS[n].__module__ for n in task_names()} == {
        f"finemem.data.tasks.{n}" for n in task_names()}
