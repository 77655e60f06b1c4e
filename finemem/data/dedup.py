"""Deduplication of the training list before training: exact (normalized hash) or near (MinHash
LSH, datasketch).

Usage:
    kept, removed = dedup_examples(expanded, mode="near", threshold=0.8)
    manifest = dedup_manifest(manifest, removed)

It runs on the per-epoch training list after `data.duplication` (so a repeated example is cured
the same way as repeats already in the data) and before canaries are planted (they are the
probe, not the data). A record's text is ``prompt + "\\n" + completion``:
  * ``exact``: the text normalized (Unicode NFKC, lower case, runs of whitespace made one
    space, stripped) and hashed with sha256; a record whose hash was seen is removed as a
    duplicate of the first record with that hash;
  * ``near``: additionally, a MinHash (`num_perm` permutations, fixed seed) of the normalized
    text's character 5-gram shingles is queried against an LSH index at Jaccard `threshold`
    (bands chosen to miss few pairs: at threshold 0.8 a pair of Jaccard 0.86 is a candidate
    with probability 0.997); a candidate whose estimated Jaccard similarity is >= `threshold`
    makes the record a duplicate of the earliest such candidate. Records are visited in list
    order, so the first of a group is kept.
Each removal is ``{"id", "duplicate_of", "kind": "exact"|"near", "jaccard"}`` (jaccard 1.0
for exact); `dedup_manifest` turns them into manifest rows: an id with no copy left gets
``times_per_epoch: 0`` and ``dedup: {duplicate_of, kind, jaccard, removed_copies}``; an id that
keeps one copy records how many of its copies went.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from finemem.data.example import Example

SHINGLE = 5  # characters per shingle: short training texts need small shingles
NUM_PERM = 128
SEED = 1
LSH_WEIGHTS = (0.05, 0.95)  # (false positive, false negative) weights of datasketch's banding


def normalize(text: str) -> str:
    """NFKC, lower case, whitespace runs -> one space, stripped.

    >>> normalize("  Hello\\n\\tWORLD ")
    'hello world'
    """
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).lower()).strip()


def _text(ex: Example) -> str:
    return normalize(ex.prompt + "\n" + ex.completion)


def _minhash(text: str, num_perm: int):
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=SEED)
    grams = {text[i:i + SHINGLE] for i in range(max(1, len(text) - SHINGLE + 1))}
    m.update_batch([g.encode("utf-8") for g in sorted(grams)])
    return m


def dedup_examples(examples: list[Example], *, mode: str, threshold: float = 0.8,
                   num_perm: int = NUM_PERM) -> tuple[list[Example], list[dict]]:
    """The records of `examples` that are kept (in order) and one dict per removed record.

    `mode` is 'none', 'exact' or 'near'; `threshold` is the Jaccard similarity of 5-gram
    shingle sets at and above which ``near`` calls two records duplicates.
    """
    if mode == "none":
        return list(examples), []
    kept: list[Example] = []
    removed: list[dict] = []
    first: dict[str, Example] = {}
    lsh = None
    hashes: dict[str, object] = {}
    if mode == "near":
        from datasketch import MinHashLSH

        # weights favour recall: each candidate is then checked by its estimated Jaccard, so a
        # false candidate costs one comparison and a missed one a duplicate left in
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    for i, ex in enumerate(examples):
        text = _text(ex)
        h = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if h in first:
            removed.append({"id": str(ex.id), "duplicate_of": str(first[h].id), "kind": "exact",
                            "jaccard": 1.0})
            continue
        if lsh is not None:
            mh = _minhash(text, num_perm)
            best = None
            for key in sorted(lsh.query(mh), key=lambda k: int(k.split(":", 1)[0])):
                j = float(mh.jaccard(hashes[key]))
                if j >= threshold:
                    best = (key, j)
                    break  # the earliest kept record that is similar enough
            if best is not None:
                removed.append({"id": str(ex.id), "duplicate_of": best[0].split(":", 1)[1],
                                "kind": "near", "jaccard": round(best[1], 4)})
                continue
            key = f"{i}:{ex.id}"
            lsh.insert(key, mh)
            hashes[key] = mh
        first[h] = ex
        kept.append(ex)
    return kept, removed


def dedup_manifest(manifest: list[dict], removed: list[dict]) -> list[dict]:
    """`manifest` (finemem.data.duplication rows) with the removals of `dedup_examples`
    recorded: ``times_per_epoch`` lowered by the copies removed, and a ``dedup`` entry on every
    row that lost a copy (what it duplicated, how, the similarity, how many copies went)."""
    by_id: dict[str, list[dict]] = {}
    for r in removed:
        by_id.setdefault(r["id"], []).append(r)
    out = []
    for row in manifest:
        gone = by_id.get(str(row["id"]), [])
        if not gone:
            out.append(row)
            continue
        times = int(row["times_per_epoch"]) - len(gone)
        # a row's own repeats point at itself; report what another id it duplicated, if any
        other = [g for g in gone if g["duplicate_of"] != str(row["id"])]
        g = other[0] if other else gone[0]
        out.append({**row, "times_per_epoch": times,
                    "dedup": {"duplicate_of": g["duplicate_of"], "kind": g["kind"],
                              "jaccard": g["jaccard"], "removed_copies": len(gone)}})
    return out
