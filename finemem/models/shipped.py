"""Base weights shipped inside the package, so that `builtin:tiny` is the same on every
machine and `make demo` does not spend minutes pretraining it.

    finemem base build --size tiny --force && finemem base ship --size tiny   # rebuild them
    path = install_shipped("tiny", digest, tmp)    # build_base does this on a cache miss

A shipped folder is `finemem/models/shipped/<size>-<hash12>/`: the cached base folder as
`build_base` writes it, plus SHA256SUMS. `build_base` copies it into `$FINEMEM_HOME` instead of
pretraining when its hash (the build spec's: sizes, corpus sample, seeds, tokenizer) equals
the one it would build and every file matches its sha256; when the spec changed (a task's
generator, the recipe), the hash differs and the base is built as before. Why ship: the
pretraining is bit-identical for one thread count on one machine but not across CPUs, so
the README's figures held on one machine only, and the build was 3.6 of the demo's 9 minutes.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

SHIPPED = Path(__file__).parent / "shipped"
SUMS = "SHA256SUMS"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_folder(size: str, digest: str) -> Path | None:
    """The shipped folder of this size and build hash, or None."""
    folder = SHIPPED / f"{size}-{digest}"
    return folder if (folder / SUMS).is_file() else None


def check_sums(folder: Path) -> str | None:
    """None when every file listed in SHA256SUMS is there with its hash; else what is wrong."""
    listed = {}
    for line in (folder / SUMS).read_text("utf-8").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            listed[name.strip()] = digest
    for name, digest in sorted(listed.items()):
        f = folder / name
        if not f.is_file():
            return f"{name} is missing"
        if _sha256(f) != digest:
            return f"{name} fails its sha256 check"
    return None if listed else "SHA256SUMS lists no file"


def install_shipped(size: str, digest: str, dest: Path) -> bool:
    """Copy the shipped base of `size` with build hash `digest` into `dest` (an empty temp
    folder); False when there is none or it fails its check (said on stderr: then build)."""
    src = shipped_folder(size, digest)
    if src is None:
        return False
    for f in src.iterdir():
        if f.name != SUMS and f.is_file():
            shutil.copy2(f, dest / f.name)
    problem = check_sums_against(src, dest)  # the copy is what will be loaded
    if problem is not None:
        print(f"warning: shipped builtin:{size} weights ({src}): {problem}; building them "
              "instead", file=sys.stderr)
        return False
    return True


def check_sums_against(src: Path, dest: Path) -> str | None:
    """check_sums of the copy in `dest` against the shipped SHA256SUMS."""
    shutil.copy2(src / SUMS, dest / SUMS)
    try:
        return check_sums(dest)
    finally:
        (dest / SUMS).unlink()


def ship(size: str) -> Path:
    """Write the cached base of `size` (built if missing) into the package as its shipped
    weights with SHA256SUMS; older shipped folders of that size are removed. It must be
    built first (`finemem base build --size SIZE --force`): shipping does not pretrain."""
    from finemem.models.base import built_base

    built = built_base(size)
    if built is None:
        from finemem.errors import UserError

        raise UserError(f"builtin:{size} is not built in this FINEMEM_HOME; build it first: "
                        f"finemem base build --size {size} --force", field="--size")
    dest = SHIPPED / built.name
    for old in SHIPPED.glob(f"{size}-*"):
        shutil.rmtree(old)
    dest.mkdir(parents=True)
    files = sorted(f for f in built.iterdir() if f.is_file())
    for f in files:
        shutil.copy2(f, dest / f.name)
    (dest / SUMS).write_text("".join(f"{_sha256(f)}  {f.name}\n" for f in files), "utf-8")
    return dest
