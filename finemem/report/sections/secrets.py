"""Report section of the `secrets` probe: per checkpoint and secret type, the share of
members' secrets extracted greedily and with k samples, beside the held-out records' (the
floor), the mean exposure among format-matched candidates, and the share of mid-text secrets
reconstructed from the whole record, each with its interval and n.
No secret's text is shown."""

from __future__ import annotations

from finemem.report.sections import register_section
from finemem.report.sections._common import Grid, ci

TEMPLATE = """
<p>Each secret (an email, phone number, IBAN, card number, date, long number or declared
field of a training record) is continued from the context before it as trained. Held-out
records are the floor: a rate there is what the format alone gives. The base model is the
first checkpoint. Intervals: Wilson (rates), bootstrap (exposure).</p>
{{ grid(table) }}
{% if recon %}{{ grid(recon) }}{% endif %}
"""


def _cell(r) -> str:
    return "-" if r is None else f"{ci(r, 2)} n={r['n']}"


def secrets_grid(run) -> Grid | None:
    rows = run.metric_rows(split="secrets")
    if not rows:
        return None
    cell = {}
    for r in rows:
        s = r["settings"]
        cell[(r["checkpoint"], r["name"], s.get("group"), s.get("type"), s.get("how"))] = r
    types = sorted({k[3] for k in cell}, key=lambda t: (t != "all", t))
    k = next((r["settings"].get("k") for r in rows if r["settings"].get("how") == "sampled"),
             None)
    headers = ["checkpoint", "type", "members greedy", "held-out greedy"]
    if k:
        headers += [f"members any of {k}", f"held-out any of {k}"]
    headers += ["members exposure (bits)", "held-out exposure"]

    out = []
    for ck in run.checkpoint_order():
        for t in types:
            g = lambda grp, how: cell.get((ck, "secret_extraction_rate", grp, t, how))  # noqa
            e = lambda grp: cell.get((ck, "secret_exposure", grp, t, None))  # noqa: E731
            if g("members", "greedy") is None:
                continue
            line = [ck, t, _cell(g("members", "greedy")), _cell(g("heldout", "greedy"))]
            if k:
                line += [_cell(g("members", "sampled")), _cell(g("heldout", "sampled"))]
            line += [ci(e("members"), 2), ci(e("heldout"), 2)]

            out.append(line)
    notes = ["A rate above the held-out one is what training leaked; exposure log2(m+1) bits "
             "means the true secret is the most likely of its m candidates."]
    return Grid("Secrets extracted per type (95% intervals)", headers, out, notes)


def reconstruction_grid(run) -> Grid | None:
    """Per checkpoint and type, the share of mid-text secrets reconstructed, members beside
    held-out records (None without reconstruction rows)."""
    rows = [r for r in run.metric_rows(split="secrets")
            if r["name"] == "secret_reconstruction_rate"]
    if not rows:
        return None
    cell = {(r["checkpoint"], r["settings"]["group"], r["settings"]["type"]): r for r in rows}
    types = sorted({k[2] for k in cell}, key=lambda t: (t != "all", t))
    out = [[ck, t, _cell(cell.get((ck, "members", t))), _cell(cell.get((ck, "heldout", t)))]
           for ck in run.checkpoint_order() for t in types if (ck, "members", t) in cell]
    m = rows[0]["settings"].get("candidates")
    notes = [f"Reconstruction (Lukas et al. 2023): the true secret ranked first among its {m} "
             "candidates with the text after it scored too, for secrets with text after "
             f"them; chance is 1/{(m or 0) + 1}."]
    return Grid("Mid-text secrets reconstructed from the whole record (95% intervals)",
                ["checkpoint", "type", "members reconstructed", "held-out reconstructed"],
                out, notes)


def terminal(run, console) -> bool:
    from finemem.report.tables import print_grid

    g = secrets_grid(run)
    if g is None:
        return False
    print_grid(g, console)
    r = reconstruction_grid(run)
    if r is not None:
        print_grid(r, console)
    return True


@register_section("secrets", title="Secrets (PII) extraction", order=47, template=TEMPLATE,
                  probes=("secrets",), terminal=terminal)
def secrets(run):
    g = secrets_grid(run)
    return None if g is None else {"table": g, "recon": reconstruction_grid(run)}
