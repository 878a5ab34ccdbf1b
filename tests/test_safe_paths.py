"""Ids never escape the folder they name a file in (issue 11, item 9).

Every place that turns a material id into a file or archive-member name goes through
:func:`matfuse.io.id_filename`: the MP charge-density cache (``<cache_dir>/<name>.json.gz``), the
density previews (``previews/<name>.png``) and the cube archive (``cubes.npz`` member
``<name>.npy``). Hostile ids are encoded into one safe path component (or, when no file can
carry them, rejected with a reason) and nothing is written outside the intended folder.
Real inputs: the ids of the staged MP and JARVIS datasets, real CHGCARs of ``chgdens_atomate``.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matfuse.density.config import DensityConfig, LocalDensitySource, MPDensitySource, SliceConfig
from matfuse.density.io import NpzWriter, chgcar_from_json, iter_npz, read_volumetric
from matfuse.density.sources import iter_mp
from matfuse.density.stage import build_density_images, read_slices

#: Hostile (but representable) ids and the one file name each must get.
HOSTILE = {
    "../../x": "%2E.%2F..%2Fx",
    "/etc/passwd": "%2Fetc%2Fpasswd",
    "a/b": "a%2Fb",
    "a_b": "a_b",
    "a%2Fb": "a%252Fb",
    "a\\b": "a%5Cb",
    "..": "%2E.",
    ".": "%2E",
    ".hidden": "%2Ehidden",
    "C:\\x": "C%3A%5Cx",
    "C:x": "C%3Ax",
    "a b": "a%20b",
    "~root": "%7Eroot",
    "Fe₂O₃-é": "Fe%E2%82%82O%E2%82%83-%C3%A9",
    "mp-149": "mp-149",
    "JVASP-1002": "JVASP-1002",
}
#: Ids no file may be named after (empty, control characters).
UNNAMEABLE = ["", "x\x00y", "x\ny", "x\ry", "\t", "a\x7f", "a\x85b"]


# ----------------------------------------------------------------------------- id_filename itself
def test_real_ids_keep_their_names(shared_data: Path) -> None:
    """Every id of the staged MP and JARVIS datasets is its own file name (existing caches stay valid)."""
    from matfuse.io import id_filename, id_from_filename

    mp = pd.read_csv(shared_data / "mp_mtcgcnn" / "mp_mtcgcnn_33064.csv.gz", usecols=["material_id"])["material_id"]
    with gzip.open(shared_data / "jarvis_dft3d" / "jarvis_dft3d_subset_with_structures.json.gz", "rt") as fh:
        jids = [rec["jid"] for rec in json.load(fh)]
    ids = [*mp.astype(str), *jids, "mp-149", "JVASP-1002"]
    assert len(ids) > 34_000
    for mid in ids:
        assert id_filename(mid) == mid and id_from_filename(mid) == mid


@pytest.mark.parametrize("mid", sorted(HOSTILE))
def test_hostile_ids_become_one_safe_component(mid: str, tmp_path: Path) -> None:
    from matfuse.io import id_filename, id_from_filename

    name = id_filename(mid)
    assert name == HOSTILE[mid]
    assert id_from_filename(name) == mid
    assert name not in (".", "..") and not name.startswith(".") and not os.path.isabs(name)
    assert not set(name) & set("/\\:\x00\n") and Path(name).name == name
    assert set(name) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-%")
    (tmp_path / f"{name}.json.gz").write_bytes(b"x")
    assert [p.name for p in tmp_path.rglob("*")] == [f"{name}.json.gz"]


@pytest.mark.parametrize("mid", [*UNNAMEABLE, "\ud800", None, 149, "a" * 201], ids=repr)
def test_unnameable_ids_are_refused_by_name(mid) -> None:
    from matfuse.io import UnsafeIdError, id_filename

    with pytest.raises(UnsafeIdError) as err:
        id_filename(mid)
    assert isinstance(err.value, ValueError)
    assert repr(mid)[:20] in str(err.value)


def test_encoding_is_collision_free_and_reversible() -> None:
    """Distinct ids never share a name: the listed look-alikes and 20,000 random ids."""
    from matfuse.io import id_filename, id_from_filename

    alphabet = "ab.-_%/\\: ~2FE5Cé₂" + "A0"
    rng = random.Random(11)
    ids = set(HOSTILE) | {"a.b", "a%2Eb", "%2E", "%2E.", "%", "%%", "_", "-", ".a", "..a", "a.."}
    ids |= {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(20_000)}
    names = {mid: id_filename(mid) for mid in ids}
    assert len(set(names.values())) == len(ids)
    assert all(id_from_filename(name) == mid for mid, name in names.items())
    assert all(not n.startswith(".") and "/" not in n and "\\" not in n for n in names.values())


def test_preview_names_go_through_id_filename() -> None:
    from matfuse.density.stage import safe_name
    from matfuse.io import id_filename

    assert safe_name("a/b") != safe_name("a_b")  # used to be 'a_b' for both
    assert all(safe_name(m) == id_filename(m) for m in HOSTILE)


def test_npz_members_are_safe_and_keys_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "cubes.npz"
    arrays = {mid: np.full(3, i, np.float32) for i, mid in enumerate(HOSTILE)}
    with NpzWriter(path) as w:
        for mid, a in arrays.items():
            w.add(mid, a)
    got = dict(iter_npz(path))
    assert set(got) == set(arrays)
    for mid, a in arrays.items():
        np.testing.assert_array_equal(got[mid], a)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    assert sorted(names) == sorted(f"{n}.npy" for n in HOSTILE.values())
    assert all("/" not in n and "\\" not in n and not n.startswith(".") for n in names)
    with np.load(path) as z:  # ordinary ids read back as ever
        np.testing.assert_array_equal(z["mp-149"], arrays["mp-149"])
    with pytest.raises(ValueError, match="x"):
        with NpzWriter(tmp_path / "bad.npz") as w:
            w.add("x\ny", np.ones(2))
    assert not (tmp_path / "bad.npz").exists()
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()] == [Path("out/cubes.npz")]


# ----------------------------------------------------------------------------- MP density cache
@pytest.fixture(scope="module")
def al_chgcar(shared_data: Path):
    """The real Al CHGCAR of chgdens_atomate, every 2nd grid point (quick to serialise)."""
    from pymatgen.io.vasp import Chgcar, Poscar

    chg = read_volumetric(shared_data / "chgdens_atomate" / "Al_SCAN_opt" / "CHGCAR.gz")
    return Chgcar(Poscar(chg.structure), {"total": chg.data["total"][::2, ::2, ::2].copy()})


class _FakeMPRester:
    """Stands in for ``mp_api.client.MPRester``: serves one real CHGCAR for any id it is asked."""

    served = None
    asked: list[str] = []

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs

    def __enter__(self) -> "_FakeMPRester":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def get_charge_density_from_material_id(self, mid: str):
        if self.served is None:
            raise AssertionError(f"MP asked for {mid!r} although it is cached")
        type(self).asked.append(mid)
        return self.served


def test_mp_density_cache_stays_inside_cache_dir(tmp_path: Path, al_chgcar, monkeypatch) -> None:
    import mp_api.client

    monkeypatch.setattr(mp_api.client, "MPRester", _FakeMPRester)
    monkeypatch.setattr(_FakeMPRester, "served", al_chgcar)
    monkeypatch.setattr(_FakeMPRester, "asked", [])
    monkeypatch.setenv("MP_API_KEY", "x" * 32)
    cache = tmp_path / "a" / "b" / "cache"
    absolute = str(tmp_path / "abs" / "y")  # an absolute id (inside tmp_path, so an escape stays harmless)
    ok = [m for m in HOSTILE if m != "/etc/passwd"] + [absolute]
    ids = ok + UNNAMEABLE
    src = MPDensitySource(cache_dir=str(cache))

    items = {i.material_id: i for i in iter_mp(ids, src, "total")}
    assert set(items) == set(ids)
    assert _FakeMPRester.asked == ok  # unnameable ids are not sent either
    for mid in UNNAMEABLE:
        assert items[mid].chgcar is None and repr(mid) in items[mid].reason
    expected = {m: HOSTILE.get(m) for m in ok}
    expected[absolute] = absolute.replace("/", "%2F")
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(cache / f"{name}.json.gz" for name in expected.values())
    for mid in ok:
        assert items[mid].chgcar is not None and items[mid].origin == f"mp:{mid}"

    # the next run reads every one back from its own file, no MP call
    monkeypatch.setattr(_FakeMPRester, "served", None)
    again = {i.material_id: i for i in iter_mp(ok, src, "total")}
    for mid in ok:
        path = cache / f"{expected[mid]}.json.gz"
        assert again[mid].origin == str(path)
        np.testing.assert_array_equal(again[mid].chgcar.data["total"], al_chgcar.data["total"])
    np.testing.assert_array_equal(chgcar_from_json((cache / "a%2Fb.json.gz").read_bytes()).data["total"], al_chgcar.data["total"])


# ----------------------------------------------------------------------------- density stage outputs
def test_density_stage_previews_and_cubes_of_hostile_ids(tmp_path: Path, shared_data: Path) -> None:
    """Local manifest with hostile ids for a real CHGCAR: one preview and one cube per id, all
    inside the output folder, none shared (``a/b`` and ``a_b`` used to write one preview)."""
    chgcar = shared_data / "chgdens_atomate" / "LiH_SCAN_opt" / "CHGCAR.gz"
    ok = ["a/b", "a_b", "a%2Fb", "../../x", "..", ".", ".hidden", "C:\\x", "a\\b", "mp-149", "Fe₂O₃-é"]
    bad = ["x\ny", "x\ty"]
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.parent.mkdir()
    pd.DataFrame({"material_id": ok + bad, "path": str(chgcar), "kind": "CHGCAR"}).to_csv(manifest, index=False)
    src = LocalDensitySource(manifest=str(manifest))
    cfg = DensityConfig(datasets={"x": src}, grid=(16, 16, 16), slice=SliceConfig(size=(16, 16)))
    out = tmp_path / "out" / "lih"
    summary = build_density_images(
        ok + bad, src, "total", cfg, out / "slices.parquet", out / "rejects.parquet", out / "cubes.npz", out / "previews"
    )
    assert summary["n_ok"] == len(ok) and summary["n_rejected"] == len(bad)
    rej = pd.read_parquet(out / "rejects.parquet").set_index("material_id")
    for mid in bad:
        assert repr(mid) in rej.loc[mid, "reason"]
    meta, images = read_slices(out / "slices.parquet")
    assert list(meta["material_id"]) == ok and images.shape == (len(ok), 16, 16)
    previews = sorted(p.name for p in (out / "previews").iterdir())
    assert previews == sorted(f"{HOSTILE[m]}.png" for m in ok)
    cubes = dict(iter_npz(out / "cubes.npz"))
    assert sorted(cubes) == sorted(ok)
    for mid in ok:
        np.testing.assert_array_equal(cubes[mid], cubes["mp-149"])
    files = {p for p in tmp_path.rglob("*") if p.is_file()} - {manifest}
    assert files == {out / "slices.parquet", out / "rejects.parquet", out / "cubes.npz"} | {
        out / "previews" / n for n in previews
    }
