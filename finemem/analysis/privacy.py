"""The privacy audit beside the promised epsilon, from stored numbers: the one-run epsilon
lower bound the canaries probe stored (`epsilon_lower_bound`) and the accountant's epsilon of
the same checkpoint (RUN_DIR/dp.json).

Usage:
    for line in audit_lines(run_dir, checkpoint="step-000040"): print(line)
    rows = audit_rows(run_dir)      # [{checkpoint, tier, bound, confidence, n, promised, delta}]
"""

from __future__ import annotations

from pathlib import Path

from finemem.run import RunFolder
from finemem.run.privacy import read_dp


def audit_rows(run_dir: str | Path) -> list[dict]:
    """One row per checkpoint and audit tier with a stored bound, in step order."""
    run = RunFolder(run_dir)
    if not run.has_results():
        return []
    dp = read_dp(run_dir)
    eps = {k: v["epsilon"] for k, v in (dp or {}).get("checkpoints", {}).items()}
    with run.open_store() as store:
        rows = store.metrics(split="canaries", name="epsilon_lower_bound")
        order = {c.name: c.step for c in store.checkpoints()}
    out = []
    for r in rows:
        st = r.settings
        step = order.get(r.checkpoint, 0)
        promised = eps.get(r.checkpoint, 0.0 if dp is not None and step == 0 else None)
        out.append({"checkpoint": r.checkpoint, "step": step,
                    "tier": st.get("tier"), "bound": r.value, "n": r.n,
                    "confidence": st.get("confidence"), "attack": st.get("attack"),
                    "delta": st.get("delta"), "promised": promised,
                    "dp": dp is not None})
    return sorted(out, key=lambda x: (x["step"], x["tier"] or 0))


def audit_lines(run_dir: str | Path, checkpoint: str | None = None) -> list[str]:
    """Sentences for `checkpoint` (default: the last audited one): the bound with its
    confidence beside the promised epsilon, and what the bound does not say."""
    rows = audit_rows(run_dir)
    if not rows:
        return []
    ck = checkpoint if checkpoint in {r["checkpoint"] for r in rows} else rows[-1]["checkpoint"]
    lines = []
    for r in (x for x in rows if x["checkpoint"] == ck):
        conf = f"{100 * r['confidence']:.0f}%" if r["confidence"] else "?"
        head = (f"privacy audit at {ck} (one-run audit, {r['n']} coin-flip canaries seen "
                f"{r['tier']}x per epoch, {r['attack']} attack): epsilon >= {r['bound']:.2f} "
                f"at {conf} confidence")
        if r["promised"] is None:
            tail = ("; trained without training.dp, so nothing was promised (the bound is "
                    "capped by the number of canaries: it shows leakage, not its size)")
        else:
            tail = f"; promised epsilon {r['promised']:.2f} at delta {r['delta']:.1e}"
            if r["tier"] and r["tier"] > 1:
                tail += f" per row (a text seen {r['tier']}x is a group of {r['tier']} rows)"
            elif r["bound"] > r["promised"]:
                tail += (" -- the bound EXCEEDS the promise: a DP bug or a broken "
                         "assumption (repeated texts, a non-Poisson batch)")
        lines.append(head + tail)
    return lines


def dp_line(run_dir: str | Path) -> str | None:
    """One line on the run's DP guarantee: epsilon spent per checkpoint (None without DP)."""
    dp = read_dp(run_dir)
    if dp is None:
        return None
    cks = sorted(dp.get("checkpoints", {}).items(), key=lambda kv: kv[1]["step"])
    spent = ", ".join(f"{k} {v['epsilon']:.2f}" for k, v in cks) or "no checkpoint yet"
    return (f"DP-SGD ({dp['accountant']} accountant, noise multiplier "
            f"{dp['noise_multiplier']:.3f}, Poisson q = {dp['sample_rate']:.4f}, delta "
            f"{dp['delta']:.1e}): epsilon spent {spent} (target {dp['target_epsilon']:g})")
