"""Canaries: made-up secrets planted in a run's training data, with never-inserted twins.

Usage:
    cans = make_canaries(cfg.data.canaries, tokenizer, scorer=nll_of_pairs)   # canaries + twins
    expanded, manifest = insert_canaries(expanded, manifest, cans)
    write_canaries(run_dir / "canaries.jsonl", cans); read_canaries(run_dir)

Families (each canary is a prompt, its key, and a completion, its secret; a twin is drawn the
same way and never inserted):
  * ``random``: `length` tokens drawn uniformly from the tokenizer's whole-word tokens, after
    "Secret <6 hex>:";
  * ``record``: "Customer record of <first> <last>:" -> " account <8 digits>, code <AAA-000>";
  * ``highppl``: `length` words from a fixed list after "Note <6 hex>:", drawn 4x over, scored
    under the base model (the `scorer`, which runs the engine), the most perplexing half kept
    and split at random between canaries and twins, so both come from the same distribution.
Per family there are ``per_tier`` canaries per tier, each seen ``tier`` times per epoch, and
``twins`` twins. With ``inclusion: half`` (the one-run privacy audit's design) each of the
``per_tier * len(tiers) + twins`` candidates of a family is inserted with probability 1/2 by a
seeded coin (tiers assigned in turn; `audit_tier` keeps a candidate's tier whether the coin put
it in or not), and the ones left out are the twins. The manifest gets one row per canary (``canary: {family, tier}``); the
whole set, twins too, goes to RUN_DIR/canaries.jsonl.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from finemem.data.example import Example
from finemem.errors import UserError
from finemem.io import write_text_atomic

FIRST = ("Alma Bruno Cyril Dagny Esko Farah Gideon Hilde Ilse Jorun Kasimir Liesel Mirko "
         "Nadia Oskar Petra Quirin Rosa Sven Tamsin Ulrich Vera Wendel Xenia Yusuf Zora").split()
LAST = ("Abernathy Brankovic Castellanos Dunleavy Eriksdottir Fairweather Gutierrez Halvorsen "
        "Ivanova Jablonski Kowalczyk Lindqvist Moreau Nakashima Okonkwo Pellegrini Quintero "
        "Rasmussen Szymanski Tanaka Underhill Valcourt Wojcik Yilmaz Zamora").split()
WORDS = ("apple river quantum velvet ledger orbit cactus mosaic lantern pepper glacier harbor "
         "nimbus saffron thimble walrus zephyr bramble cobalt dynamo ember falcon gravel hinge "
         "ivory jigsaw kettle lumen marble nectar oxide pylon quartz rivet sprocket tundra "
         "umber vortex willow yarrow zinc anchor beacon cipher delta fjord gossamer hollow "
         "indigo juniper kelp lilac meadow nougat opal prism quill raven sable tinsel "
         "ultra vapor wharf xylem yeast zodiac amber basalt crater dune echo fern grotto "
         "hazel iris jade knoll loom mantle north onyx pebble quiver reef slate thorn").split()


@dataclass(frozen=True)
class Canary:
    id: str
    family: str
    tier: int          # times per epoch; 0 for a twin (never inserted)
    prompt: str
    completion: str
    audit_tier: int = 0  # inclusion 'half': the tier of this candidate, in or out; 0 otherwise

    @property
    def inserted(self) -> bool:
        return self.tier > 0

    def example(self) -> Example:
        return Example(prompt=self.prompt, completion=self.completion, id=self.id,
                       meta={"canary": self.family, "tier": self.tier})


def _word_tokens(tokenizer, limit: int = 20000) -> list[str]:
    """Whole-word tokens (" abc") that re-encode to themselves: random sequences of them keep
    their token boundaries."""
    out = []
    for i in range(min(len(tokenizer), limit)):
        s = tokenizer.decode([i])
        w = s[1:]
        if (s.startswith(" ") and w.isalpha() and w.isascii() and len(w) >= 2
                and tokenizer(s, add_special_tokens=False)["input_ids"] == [i]):
            out.append(s)
    return out


def _key(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(6))


def _draw(family: str, rng: random.Random, length: int, vocab: list[str]) -> tuple[str, str]:
    if family == "random":
        return f"Secret {_key(rng)}:", "".join(rng.choice(vocab) for _ in range(length))
    if family == "record":
        code = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(3))
        return (f"Customer record of {rng.choice(FIRST)} {rng.choice(LAST)}:",
                f" account {rng.randrange(10**7, 10**8)}, code {code}-{rng.randrange(1000):03d}")
    return f"Note {_key(rng)}:", " " + " ".join(rng.choice(WORDS) for _ in range(length))


def make_canaries(cfg, tokenizer, *, scorer: Callable[[list[Example]], list[float]] | None = None
                  ) -> list[Canary]:
    """The canaries and twins of `cfg` (a `finemem.config.Canaries`), deterministic in its seed.

    `scorer` maps examples to their mean completion NLL under the base model (needed by the
    ``highppl`` family; `finemem.train.setup` passes one that runs the engine)."""
    out: list[Canary] = []
    n_can = cfg.per_tier * len(cfg.tiers)
    for fam in cfg.families:
        rng = random.Random(f"{cfg.seed}:{fam}")
        vocab = _word_tokens(tokenizer) if fam == "random" else []
        if fam == "random" and len(vocab) < 16:
            raise UserError(f"the tokenizer has only {len(vocab)} whole-word tokens; random-token "
                            "canaries need at least 16 (drop 'random' from data.canaries.families)",
                            field="data.canaries.families")
        need = n_can + cfg.twins
        pairs: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        target = need * (4 if fam == "highppl" else 1)
        while len(pairs) < target:
            p = _draw(fam, rng, cfg.length, vocab)
            if p not in seen:  # no canary may equal a twin
                seen.add(p)
                pairs.append(p)
        if fam == "highppl":
            if scorer is None:
                raise UserError("high-perplexity canaries need the base model to score them",
                                field="data.canaries.families")
            nll = scorer([Example(p, c, id=str(i)) for i, (p, c) in enumerate(pairs)])
            top = sorted(range(len(pairs)), key=lambda i: (-nll[i], i))[: 2 * need]
            pairs = [pairs[i] for i in sorted(rng.sample(top, need))]
        rng.shuffle(pairs)
        if getattr(cfg, "inclusion", "tiers") == "half":  # issue 21: each in w.p. 1/2
            out += _coin_candidates(cfg, fam, pairs[:need])
            continue
        k = 0
        for tier in cfg.tiers:
            for j in range(cfg.per_tier):
                out.append(Canary(f"canary-{fam}-t{tier}-{j}", fam, tier, *pairs[k]))
                k += 1
        out += [Canary(f"twin-{fam}-{j}", fam, 0, *pairs[n_can + j]) for j in range(cfg.twins)]
    return out


def _coin_candidates(cfg, fam: str, pairs: list[tuple[str, str]]) -> list[Canary]:
    """Candidate j gets tier tiers[j % len(tiers)] and is inserted iff its coin (a generator
    seeded by the canary seed and family, apart from the draws) says so."""
    coin = random.Random(f"{cfg.seed}:{fam}:coin")
    out = []
    for j, pair in enumerate(pairs):
        tier = cfg.tiers[j % len(cfg.tiers)]
        out.append(Canary(f"cand-{fam}-t{tier}-{j}", fam, tier if coin.random() < 0.5 else 0,
                          *pair, audit_tier=tier))
    return out


def insert_canaries(expanded: list[Example], manifest: list[dict], canaries: list[Canary]
                    ) -> tuple[list[Example], list[dict]]:
    """The per-epoch training list with each inserted canary `tier` times, and the manifest
    with one row per canary (``canary: {family, tier}``). Refuses an id clash with the data."""
    ids = {str(r["id"]) for r in manifest}
    clash = [c.id for c in canaries if c.id in ids]
    if clash:
        raise UserError(f"training examples use canary ids ({', '.join(clash[:3])}); rename "
                        "them", field="data.canaries")
    expanded, manifest = list(expanded), list(manifest)
    for c in canaries:
        if c.inserted:
            expanded += [c.example()] * c.tier
            manifest.append({"id": c.id, "times_per_epoch": c.tier,
                             "prompt_chars": len(c.prompt), "completion_chars": len(c.completion),
                             "canary": {"family": c.family, "tier": c.tier}})
    return expanded, manifest


def write_canaries(path: str | Path, canaries: list[Canary]) -> None:
    write_text_atomic(Path(path), "".join(json.dumps(asdict(c)) + "\n" for c in canaries))


def read_canaries(run_dir: str | Path) -> list[Canary]:
    """The canaries and twins of a run; `UserError` (saying how to rerun) when it has none."""
    path = Path(run_dir) / "canaries.jsonl"
    if not path.is_file():
        raise UserError("this run was trained without canaries; add them to its config with "
                        "`finemem canaries add CONFIG` and train into a new run_dir (or "
                        "`finemem train --force` to retrain this one)", source=str(run_dir))
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(Canary(**json.loads(line)))
            except (ValueError, TypeError):
                raise UserError("damaged canary line", source=str(path), row=n) from None
    return rows
