"""The per-record risk register: one row per training record, from what the audit stored
(no model): how each attack ranks it among the members, how it came back (extraction
category, secrets found and extracted), how often it was seen, and when it first became
extractable.

Usage:
    reg = risk_register("runs/demo", at=None, attack="loss")   # Register(rows, checkpoint, ...)
    reg.rows[0]            # the record most at risk: {"record": ..., "secrets_greedy": 2, ...}
    write_register(reg, "risk.csv")                            # .csv, .parquet or .json

Columns (absent probes leave theirs empty): record, times_seen; per attack `pct_<attack>`
(its percentile among the members, 100 = the most member-like); `tpr_at_score` /
`fpr_at_score` of the chosen attack at the record's own score (the share of members / of
non-members that score at least as member-like: a low FPR means the record is singled out);
extraction_category (the extraction probe's, against its own training text);
secrets_found / secrets_greedy / secrets_sampled / secrets_reconstructed (mid-text secrets
ranked first in the whole record) and the extracted types (the secrets probe);
exact_extractable; first_extractable_epoch (the first checkpoint whose greedy continuation
reproduced the record); first_secret_epoch; first_below_band_epoch (the first checkpoint where
its loss fell below the non-members' 5% quantile: `attacks.trajectory.first_below_band`);
preview (its prompt and completion with secrets masked unless asked).
Rows are sorted most at risk first: secrets extracted greedily, then by sampling, then exact
extraction, then the chosen attack's percentile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finemem.errors import UserError

HIST = "membership-all"


@dataclass
class Register:
    checkpoint: str
    attack: str
    rows: list[dict]
    notes: list[str] = field(default_factory=list)


def _pct(values: np.ndarray, side: str) -> np.ndarray:
    """Percentile of each value among `values` on the member side (100 = most member-like)."""
    v = values if side == "higher" else -values
    return np.array([100.0 * np.mean(v <= x) for x in v])


def _at_least(x: float, pool: np.ndarray, side: str) -> float:
    return float(np.mean(pool >= x) if side == "higher" else np.mean(pool <= x))


def risk_register(run_dir: str | Path, *, at: str | None = None, attack: str = "loss",
                  show_secrets: bool = False) -> Register:
    from finemem.audit.attacks import get_attack
    from finemem.audit.attacks.trajectory import first_below_band
    from finemem.audit.members import members
    from finemem.data.secrets import mask_secrets
    from finemem.run import RunFolder

    run = RunFolder(run_dir)
    run.require_results()
    cfg = run.config
    with run.open_store() as store:
        cks = [c for c in run.checkpoints(store, merges=False) if c.content_hash]
        if not cks:
            raise UserError("no audited checkpoints", source=str(run_dir))
        names = [c.name for c in cks]

        def vals(c, split, name):
            return store.get_values(c.content_hash, split, name)

        def useful(c):
            return bool(vals(c, HIST, "attack_scores") or vals(c, "secrets", "secret_result"))
        if at is None:
            done = [c for c in cks if useful(c)]
            if not done:
                raise UserError("no membership or secrets results in the store; run `finemem "
                                "audit RUN_DIR --probes membership,secrets` first",
                                source=str(run_dir))
            ck = done[-1]
        else:
            found = [c for c in cks if c.name == at or str(c.step) == str(at)
                     or Path(str(at)).name == c.name]
            if not found:
                raise UserError(f"no checkpoint '{at}'; the run has: {', '.join(names)}",
                                field="--at")
            ck = found[0]
        upto = [c for c in cks if c.step <= ck.step]
        mem = members(run.path, cfg)
        rows = {str(e.id): {"record": str(e.id), "times_seen": t} for e, t in mem}
        text = {str(e.id): e.prompt + e.completion for e, _ in mem}
        # the declared secret fields (and a task's own, e.g. builtin:records) are masked too
        sec_cfg = getattr(cfg.audit, "secrets", None)
        declared = list(getattr(sec_cfg, "fields", None) or [])
        # what the probe was told to find is masked too: its regexes, and Presidio's finds
        # on top of finemem's patterns when the run asked for them
        from finemem.data.presidio import presidio_installed

        presidio = getattr(sec_cfg, "detector", "builtin") != "builtin" and presidio_installed()
        mask_kw = {"patterns": dict(getattr(sec_cfg, "patterns", None) or {}),
                   "detector": "both" if presidio else "builtin"}
        fields = {str(e.id): {**{f: str(e.meta[f]) for f in declared if e.meta.get(f)},
                              **{k: str(v) for k, v in
                                 (e.meta.get("secrets") or {}).items()}}
                  for e, _ in mem}
        notes = [f"checkpoint {ck.name} (epoch {ck.epoch:g}); {len(rows)} training records"]

        scores, member = vals(ck, HIST, "attack_scores"), vals(ck, HIST, "is_member")
        side = None
        if scores:
            attacks = list(next(iter(scores.values())))
            mids = [i for i in scores if member.get(i) and i in rows]
            nids = [i for i in scores if not member.get(i)]
            for a in attacks:
                s = get_attack(a).member_when
                m = np.array([scores[i][a] for i in mids], dtype=float)
                for i, p in zip(mids, _pct(m, s)):
                    rows[i][f"pct_{a}"] = round(float(p), 1)
            if attack in attacks:
                side = get_attack(attack).member_when
                m = np.array([scores[i][attack] for i in mids], dtype=float)
                n = np.array([scores[i][attack] for i in nids], dtype=float)
                for i in mids:
                    x = scores[i][attack]
                    rows[i]["tpr_at_score"] = round(_at_least(x, m, side), 4)
                    rows[i]["fpr_at_score"] = round(_at_least(x, n, side), 4) if n.size else None
                notes.append(f"attack {attack}: {len(mids)} members scored against "
                             f"{len(nids)} non-members")
            else:
                notes.append(f"attack {attack} was not run at {ck.name}; ran: "
                             f"{', '.join(attacks)}")
            # the loss path over every checkpoint so far
            hist = [vals(c, HIST, "mean_nll") for c in upto]
            ids = [i for i in scores if all(i in h for h in hist)]
            if len(hist) > 1 and ids:
                h = np.array([[h[i] for i in ids] for h in hist], dtype=float)
                first = first_below_band(h, np.array([bool(member.get(i)) for i in ids]))
                for i, f in zip(ids, first):
                    if i in rows:
                        rows[i]["first_below_band_epoch"] = upto[f].epoch if f >= 0 else None
        cat = vals(ck, "members", "category")
        for i, v in cat.items():
            if i in rows:
                rows[i]["extraction_category"] = v
        for c in upto:  # first checkpoint whose greedy continuation reproduced the record
            for i, v in vals(c, "membership", "exact_greedy_extractable").items():
                if i in rows and v and "first_extractable_epoch" not in rows[i]:
                    rows[i]["first_extractable_epoch"] = c.epoch
        ex_now = vals(ck, "membership", "exact_greedy_extractable")
        for i in rows:
            if ex_now:
                rows[i]["exact_extractable"] = bool(ex_now.get(i))
        sec = vals(ck, "secrets", "secret_result")
        if sec:
            for r in sec.values():
                if r["group"] != "members" or r["record"] not in rows:
                    continue
                row = rows[r["record"]]
                row["secrets_found"] = row.get("secrets_found", 0) + 1
                row["secrets_greedy"] = row.get("secrets_greedy", 0) + int(r["greedy"])
                row["secrets_sampled"] = row.get("secrets_sampled", 0) + int(r["sampled"])
                if r.get("reconstructed") is not None:
                    row["secrets_reconstructed"] = (row.get("secrets_reconstructed", 0)
                                                    + int(r["reconstructed"]))
                row["max_exposure_bits"] = round(max(row.get("max_exposure_bits", 0.0),
                                                     r["exposure"]), 2)
                if r["greedy"] or r["sampled"]:
                    row.setdefault("extracted_types", [])
                    row["extracted_types"] = sorted({*row["extracted_types"], r["type"]})
            for c in upto:
                for r in vals(c, "secrets", "secret_result").values():
                    i = r["record"]
                    if r["greedy"] and i in rows and "first_secret_epoch" not in rows[i]:
                        rows[i]["first_secret_epoch"] = c.epoch
            notes.append(f"secrets: {len(sec)} probed at {ck.name}")
        for i, row in rows.items():
            t = text[i]
            row["preview"] = t if show_secrets else mask_secrets(t, fields=fields[i],
                                                                      **mask_kw)
            if "extracted_types" in row:
                row["extracted_types"] = ",".join(row["extracted_types"])
    key = f"pct_{attack}"
    out = sorted(rows.values(), key=lambda r: (-r.get("secrets_greedy", 0),
                                               -r.get("secrets_sampled", 0),
                                               -int(bool(r.get("exact_extractable"))),
                                               -(r.get(key) or 0.0), r["record"]))
    return Register(ck.name, attack, out, notes)


COLUMNS_FIRST = ["record", "times_seen", "secrets_found", "secrets_greedy", "secrets_sampled",
                 "secrets_reconstructed", "extracted_types", "max_exposure_bits", "extraction_category",
                 "exact_extractable", "first_extractable_epoch", "first_secret_epoch",
                 "first_below_band_epoch", "tpr_at_score", "fpr_at_score"]


def columns(rows: list[dict]) -> list[str]:
    have = {k for r in rows for k in r}
    rest = sorted(k for k in have if k not in COLUMNS_FIRST and k != "preview")
    return [c for c in COLUMNS_FIRST if c in have] + rest + ["preview"]


def write_register(reg: Register, path: str | Path) -> Path:
    """Write the register as CSV, Parquet or JSON (by the file's suffix), atomically."""
    from finemem.io import atomic_file

    path = Path(path)
    cols = columns(reg.rows)
    kind = path.suffix.lower()
    if kind not in (".csv", ".parquet", ".json"):
        raise UserError(f"unknown export format '{path.suffix}'; use .csv, .parquet or .json",
                        source=str(path))
    import pandas as pd

    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in reg.rows], columns=cols)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        if kind == ".csv":
            df.to_csv(tmp, index=False)
        elif kind == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", indent=1)
    return path
