"""The shipped builtin:tiny weights (finemem/models/shipped/): a fresh $FINEMEM_HOME loads them
instead of pretraining, byte for byte, and a copy that fails its sha256 check is not used."""

import hashlib
import json
import shutil

import pytest

from finemem.models import shipped


def _digest(size):
    from finemem.models.base import build_spec

    return hashlib.sha256(json.dumps(build_spec(size), sort_keys=True).encode()
                          ).hexdigest()[:12]


def test_shipped_tiny_matches_the_build_spec():
    digest = _digest("tiny")
    assert shipped.shipped_folder("tiny", digest) is not None, (
        f"no shipped weights for the current builtin:tiny spec ({digest}): the spec changed; "
        "rebuild them with `finemem base build --size tiny --force && finemem base ship "
        "--size tiny`")
    assert shipped.check_sums(shipped.shipped_folder("tiny", digest)) is None


def test_fresh_home_loads_the_shipped_base_without_pretraining(tmp_path, monkeypatch):
    from finemem.models import _pretrain
    from finemem.models.base import build_base

    monkeypatch.setenv("FINEMEM_HOME", str(tmp_path))
    monkeypatch.setattr(_pretrain, "build", lambda *a, **k: pytest.fail("pretrained"))
    path = build_base("tiny")
    src = shipped.shipped_folder("tiny", _digest("tiny"))
    for f in src.iterdir():
        if f.name != shipped.SUMS:
            assert (path / f.name).read_bytes() == f.read_bytes(), f.name
    assert not (path / shipped.SUMS).exists()


def test_a_corrupted_copy_is_not_used(tmp_path, monkeypatch, capsys):
    digest = _digest("tiny")
    fake = tmp_path / "shipped"
    shutil.copytree(shipped.shipped_folder("tiny", digest), fake / f"tiny-{digest}")
    weights = fake / f"tiny-{digest}" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "SHIPPED", fake)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert shipped.install_shipped("tiny", digest, dest) is False
    assert "model.safetensors fails its sha256 check" in capsys.readouterr().err
    assert shipped.install_shipped("tiny", "0" * 12, dest) is False  # another spec: none


def test_ship_refuses_a_base_that_is_not_built(tmp_path, monkeypatch):
    """Shipping copies what `finemem base build` made; it never pretrains one itself."""
    from finemem.errors import UserError
    from finemem.models import _pretrain

    monkeypatch.setenv("FINEMEM_HOME", str(tmp_path))
    monkeypatch.setattr(_pretrain, "build", lambda *a, **k: pytest.fail("pretrained"))
    with pytest.raises(UserError, match="finemem base build --size test --force"):
        shipped.ship("test")
