"""Secrets: detection (patterns with checksums, declared fields, regexes), format-matched
candidates, the built-in records task, and the `secrets` probe end to end."""

import random

import pytest

from finemem.data.secrets import (Secret, candidates, find_secrets, iban_ok, luhn_ok)
from finemem.metrics.secrets import exposure_among, secret_reproduced


def test_patterns_find_each_type_and_check_checksums():
    text = ("Mail ada.l@mail.example.com, call +44 7700 900123 or 020 7946 0958; card "
            "4539 1488 0343 6467, IBAN GB82 WEST 1234 5698 7654 32, born 1984-03-12, "
            "code 482913. Bad card 4539 1488 0343 6468.")
    got = [(s.type, s.text) for s in find_secrets(text)]
    assert ("email", "ada.l@mail.example.com") in got
    assert ("phone", "+44 7700 900123") in got and ("phone", "020 7946 0958") in got
    assert ("card", "4539 1488 0343 6467") in got
    assert ("iban", "GB82 WEST 1234 5698 7654 32") in got
    assert ("date", "1984-03-12") in got and ("digits", "482913") in got
    assert not any(t == "card" and "6468" in x for t, x in got)   # fails Luhn
    for s in find_secrets(text):
        assert text[s.start:s.end] == s.text


def test_declared_fields_and_patterns_come_first():
    text = "Lives at 12 Mill Lane, Carrow. Ref AB-77."
    got = find_secrets(text, fields={"address": "12 Mill Lane, Carrow"},
                       patterns={"ref": r"[A-Z]{2}-\d\d"})
    assert [(s.type, s.text) for s in got] == [("address", "12 Mill Lane, Carrow"),
                                               ("ref", "AB-77")]


def test_candidates_match_the_format_and_checksums():
    card = Secret("card", 0, 19, "4539 1488 0343 6467")
    iban = Secret("iban", 0, 27, "GB82 WEST 1234 5698 7654 32")
    mail = Secret("email", 0, 12, "ada.l@ex.org")
    for c in candidates(card, m=50, seed=0):
        assert luhn_ok(c) and len(c) == 19 and c[4] == " " and c != card.text
    for c in candidates(iban, m=50, seed=0):
        assert iban_ok(c) and c[:2] == "GB" and len(c) == len(iban.text)
    ms = candidates(mail, m=30, seed=1)
    assert len(set(ms)) == 30 and all(c.endswith("@ex.org") and len(c) == 12 for c in ms)
    assert ms == candidates(mail, m=30, seed=1)


def test_reproduced_and_exposure_hand_computed():
    assert secret_reproduced(" ada@x.org. Bye", "ada@x.org")
    assert not secret_reproduced(" ada@x.or", "ada@x.org")
    # ranks 1 of 4 (log2 4 - 0 = 2 bits) and 4 of 4 (0 bits)
    assert exposure_among([1.0, 5.0], [[2, 3, 4], [1, 2, 3]]).tolist() == [2.0, 0.0]


def test_records_task_is_seeded_disjoint_and_its_secrets_are_found():
    from finemem.data.tasks import get_task

    t = get_task("records")
    tr, te = t.generate("train", 60, 0), t.generate("test", 60, 0)
    assert [e.completion for e in tr] == [e.completion for e in t.generate("train", 60, 0)]
    assert not {e.prompt for e in tr} & {e.prompt for e in te}
    assert len({e.meta["kind"] for e in tr}) == 4
    for e in tr:
        found = {s.text for s in find_secrets(e.completion, fields={"address":
                                                                    e.meta.get("address", "")})}
        for kind, value in e.meta["secrets"].items():
            assert value in e.completion and value in found, (kind, value, e.completion)
        if "card" in e.meta:
            assert luhn_ok(e.meta["card"])
        if "iban" in e.meta:
            assert iban_ok(e.meta["iban"])


def test_records_leave_the_base_models_as_built():
    from finemem.models.base import build_spec

    assert "records" not in build_spec("test")["corpus"]["tasks"]


def _train_and_audit(root, cfg, probes):
    import yaml
    from typer.testing import CliRunner

    from finemem.cli import app

    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["train", "--config", str(path), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["audit", str(root / "run"), "--probes", probes])
    assert r.exit_code == 0, r.output
    return root / "run", r.output


def _rows(run, split):
    from finemem.store import Store

    with Store(run / "results.sqlite") as s:
        return [x.as_dict() for x in s.metrics(split=split)]


@pytest.fixture(scope="module")
def records_run(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("records")
    cfg = {"run_dir": str(root / "run"), "model": "builtin:test",
           "data": {"train": {"source": "builtin:records", "split": "train", "n": 16},
                    "eval": {"test": {"source": "builtin:records", "split": "test", "n": 16}}},
           "training": {"epochs": 2, "lr": 3e-3, "batch_size": 16},
           "audit": {"likelihood": {"train_sample": 4},
                     "secrets": {"members": 8, "heldout": 8, "samples": 2, "candidates": 5,
                                 "n_boot": 100},
                     "membership": {"members": 16, "nonmembers": 16, "n_boot": 100,
                                    "fprs": [], "blind_folds": 2}}}
    return _train_and_audit(root, cfg, "secrets,membership")


@pytest.mark.integration
def test_secrets_probe_prints_and_stores_rates_per_type(records_run):
    run, out = records_run
    assert "Secrets extracted per type" in out and "held-out greedy" in out
    rows = _rows(run, "secrets")
    rates = [r for r in rows if r["name"] == "secret_extraction_rate"]
    cks = {r["checkpoint"] for r in rates}
    assert len(cks) == 3                                      # the base and 2 epochs
    for r in rates:
        assert r["settings"]["group"] in ("members", "heldout") and r["n"] > 0
        assert r["lo"] - 1e-9 <= r["value"] <= r["hi"] + 1e-9
    types = {r["settings"]["type"] for r in rates}
    assert {"all", "email", "phone"} <= types
    expo = [r for r in rows if r["name"] == "secret_exposure"]
    assert expo and all(0 <= r["value"] <= 2.6 for r in expo)   # log2(5 + 1) at most
    # reconstruction: mid-text secrets (every record's text goes on after its email) per
    # type, members and held-out, each a rate with n and an interval
    rec = [r for r in rows if r["name"] == "secret_reconstruction_rate"]
    assert {(r["checkpoint"], r["settings"]["group"]) for r in rec} == {
        (c, g) for c in cks for g in ("members", "heldout")} and "email" in {
        r["settings"]["type"] for r in rec}
    for r in rec:
        assert r["n"] > 0 and r["lo"] - 1e-9 <= r["value"] <= r["hi"] + 1e-9
    assert "members reconstructed" in out and "from the whole record" in out


@pytest.mark.integration
def test_risk_register_exports_and_masks(records_run, tmp_path):
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from finemem.cli import app
    from finemem.data.tasks import get_task

    run, _ = records_run
    emails = [e.meta["email"] for e in get_task("records").generate("train", 16, 0)]
    r = CliRunner().invoke(app, ["risk", str(run), "--out", str(tmp_path / "r.csv")])
    assert r.exit_code == 0, r.output
    assert "Records most at risk" in r.output and not any(m in r.output for m in emails)
    df = pd.read_csv(tmp_path / "r.csv")
    assert len(df) == 16 and {"record", "times_seen", "secrets_found", "pct_loss",
                              "secrets_reconstructed",
                              "fpr_at_score", "preview"} <= set(df.columns)
    assert df["preview"].str.contains(r"\[email\]").all()
    for suffix in ("parquet", "json"):
        r = CliRunner().invoke(app, ["risk", str(run), "--at", "step-000000", "--out",
                                     str(tmp_path / f"r.{suffix}")])
        assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "r.json").read_text())) == 16
    assert len(pd.read_parquet(tmp_path / "r.parquet")) == 16
    from finemem.errors import UserError

    r = CliRunner().invoke(app, ["risk", str(run), "--at", "step-9"])
    assert isinstance(r.exception, UserError) and "no checkpoint 'step-9'" in str(r.exception)
    # the report quotes training text masked; --show-secrets unmasks
    r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    html = (run / "report" / "index.html").read_text()
    assert "Records most at risk" in html and "Secrets (PII) extraction" in html
    assert not any(m in html for m in emails)
    r = CliRunner().invoke(app, ["report", str(run), "--show-secrets"])
    html = (run / "report" / "index.html").read_text()
    assert any(m in html for m in emails)


@pytest.mark.integration
def test_secrets_on_a_user_jsonl_with_declared_fields(tmp_path):
    import json

    import torch

    torch.set_num_threads(1)
    rng = random.Random(0)

    def rows(n, off):
        out = []
        for i in range(n):
            acct = f"AC-{rng.randrange(10**5, 10**6)}"
            out.append({"id": f"t{off + i}", "prompt": f"Ticket {off + i} from a customer.\n",
                        "completion": f" Your account {acct} is unlocked.", "account": acct})
        return out
    for name, data in (("train", rows(12, 0)), ("test", rows(12, 100))):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    cfg = {"run_dir": str(tmp_path / "run"), "model": "builtin:test",
           "data": {"train": {"source": str(tmp_path / "train.jsonl")},
                    "eval": {"test": {"source": str(tmp_path / "test.jsonl")}}},
           "training": {"epochs": 1, "lr": 3e-3, "batch_size": 12},
           "audit": {"likelihood": {"train_sample": 4},
                     "secrets": {"members": 12, "heldout": 12, "fields": ["account"],
                                 "types": [], "samples": 0, "candidates": 4}}}
    run, out = _train_and_audit(tmp_path, cfg, "secrets")
    rates = [r for r in _rows(run, "secrets") if r["name"] == "secret_extraction_rate"]
    assert {r["settings"]["type"] for r in rates} == {"all", "account"}
    assert {r["n"] for r in rates} == {12}


class _CharTok:  # one token per character: hand-checkable targets
    bos_token_id = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(ch) for ch in text]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


class _Scored:
    def __init__(self, nll):
        self.nll_sum = nll


def test_reconstruction_hand_computed():
    """A stand-in model that knows one record's text: the true code, scored with the text
    after it, ranks first; for a record whose text it learned with another code, it does not;
    a secret at the end of its text is not reconstructed (no suffix)."""
    from finemem.audit.probes.secrets import Item, Secrets, SecretsConfig
    from finemem.data.example import Example

    tok = _CharTok()
    known = {"r1": "Q1: code 123456 sent.", "r2": "Q2: code 777777 sent."}  # what it learned
    exs = [Example("Q1:", " code 123456 sent.", id="r1"),
           Example("Q2:", " code 222222 sent.", id="r2"),
           Example("Q3:", " code 333333", id="r3")]
    probe = Secrets(SecretsConfig(suffix_tokens=3))
    probe.items = [Item(e, Secret("digits", 6, 12, e.completion[6:12]), "members", tok, 3)
                   for e in exs]
    probe.cands = {"r1#6": ["654321", "123450"], "r2#6": ["777777", "999999"],
                   "r3#6": ["000000"]}
    seen = []

    class Ctx:
        tokenizer = tok

        def phase(self, what):
            pass

        def score_tokens(self, ref, model, ids, pairs, setting):
            out = []
            for i, (context, target) in zip(ids, pairs):
                text, want = tok.decode(context + target), known.get(i.split("#")[0], "")
                seen.append((i, text))
                # NLL: one nat per character that differs from the learned text
                out.append(_Scored(sum(a != b for a, b in zip(text, want))
                                   + abs(len(text) - len(want))))
            return out

    assert probe.items[0].suffix == " se" and probe.items[2].suffix == ""
    got = probe._reconstruct(Ctx(), None, None)
    assert got == {0: True, 1: False}                     # r3's code ends its text
    assert ("r1#6~r", "Q1: code 123456 se") in seen and ("r2#6~r0", "Q2: code 777777 se") in seen


def _presidio_or_skip():
    from finemem.data.presidio import presidio_installed

    if not presidio_installed():
        pytest.skip("Presidio's analyzer is not installed (the optional extra: "
                    "pip install 'finemem[pii]')")


def test_presidio_detector_finds_offline_and_merges_with_finemems(tmp_path, monkeypatch):
    """Presidio's pattern recognizers with a blank spaCy pipeline saved to FINEMEM_HOME (no
    model, no network); `both` keeps finemem's finds and adds Presidio's; a declared field
    comes first either way."""
    _presidio_or_skip()
    import socket

    from finemem.data import presidio

    monkeypatch.setenv("FINEMEM_HOME", str(tmp_path))
    presidio._engine.cache_clear()

    def no_network(*a, **k):
        raise OSError("no network in this test")
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    text = ("Card 4539 1488 0343 6467, mail ada.l@x.org, IBAN GB82 WEST 1234 5698 7654 32, "
            "ref AC-991. SSN 078-05-1120.")
    got = {(s.type, s.text) for s in find_secrets(text, detector="presidio")}
    assert {("card", "4539 1488 0343 6467"), ("email", "ada.l@x.org"),
            ("iban", "GB82 WEST 1234 5698 7654 32")} <= got
    assert (tmp_path / "presidio" / "blank-en" / "config.cfg").is_file()
    both = find_secrets(text, fields={"account": "AC-991"}, detector="both")
    kinds = {(s.type, s.text) for s in both}
    assert ("account", "AC-991") in kinds and ("email", "ada.l@x.org") in kinds
    builtin = {(s.type, s.text) for s in find_secrets(text)}
    assert builtin <= kinds | {("account", "AC-991")}    # finemem's own finds are all kept
    spans = sorted((s.start, s.end) for s in both)
    assert all(b <= c for (_, b), (c, _) in zip(spans, spans[1:]))   # no overlap
    presidio._engine.cache_clear()


def test_presidio_detector_without_the_extra_is_one_clear_line(monkeypatch):
    from finemem.audit.probes.secrets import Secrets, SecretsConfig
    from finemem.data import presidio
    from finemem.errors import UserError

    monkeypatch.setattr(presidio, "presidio_installed", lambda: False)
    with pytest.raises(UserError, match=r"pip install 'finemem\[pii\]'"):
        Secrets(SecretsConfig(detector="presidio")).prepare(None)
