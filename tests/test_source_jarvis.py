"""The ``jarvis`` source: a figshare-format store built from the real shared JARVIS subset, read
offline by jarvis-tools' own ``figshare.data`` (network calls are made to fail).

Expected values come from the shared subset itself (its records and POSCAR strings, parsed by
pymatgen), never from the code under test.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import math
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure
from pymatgen.io.vasp import Poscar

from matfuse.config import JarvisSource
from matfuse.sources import jarvis
from matfuse.structures import StructureError, parse_structure

TARGETS = {
    "formation_energy_per_atom": "formation_energy_peratom",
    "band_gap": "optb88vdw_bandgap",
    "e_above_hull": "ehull",
    "mbj_gap": "mbj_bandgap",
}


@pytest.fixture(scope="module")
def subset_path(shared_data: Path) -> Path:
    return shared_data / "jarvis_dft3d" / "jarvis_dft3d_subset_with_structures.json.gz"


@pytest.fixture(scope="module")
def records(subset_path: Path) -> list[dict]:
    with gzip.open(subset_path, "rt") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def store(subset_path: Path, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("jarvis_store")
    jarvis.prepare_local_store(subset_path, d)
    return d


class _NetworkCalls:
    def __init__(self) -> None:
        self.calls: list[str] = []


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> _NetworkCalls:
    """Any outbound connection (socket, requests, urllib) raises and is recorded."""
    seen = _NetworkCalls()

    def refuse(what: str):
        def _raise(*args, **kwargs):
            seen.calls.append(f"{what} {args[1:2] or args[:1]}")
            raise OSError(f"network disabled in test ({what})")

        return _raise

    import urllib.request

    import requests

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urlopen"))
    monkeypatch.setattr(requests.Session, "request", refuse("requests"))
    return seen


def test_store_is_the_figshare_layout(store: Path, records: list[dict]):
    from jarvis.db.figshare import get_db_info

    url, js_tag = get_db_info()["dft_3d"][:2]
    path = store / f"{js_tag}.zip"
    assert path.is_file()
    with zipfile.ZipFile(path) as zf:
        data = json.loads(zf.read(js_tag))
    assert len(data) == len(records)
    keys = set(data[0])
    assert all(set(r) == keys for r in data)  # uniform keys, as in the published file
    assert set(data[0]["atoms"]) >= {"lattice_mat", "coords", "elements", "cartesian", "props", "abc", "angles"}
    # keys a record lacked are JARVIS' "na" strings
    lacking = [(i, k) for i, r in enumerate(records) for k in ("ehull", "formation_energy_peratom") if k not in r]
    assert lacking
    assert all(data[i][k] == "na" for i, k in lacking)


def test_real_figshare_reader_reads_offline(store: Path, records: list[dict], no_network):
    from jarvis.db import figshare

    data = figshare.data("dft_3d", store_dir=str(store))
    assert no_network.calls == []
    assert [d["jid"] for d in data] == [r["jid"] for r in records]
    for d, r in zip(data, records):
        for k, v in r.items():
            if k != "atoms":
                assert d[k] == v


def test_fetch_offline_counts_targets_and_na(store: Path, records: list[dict], no_network):
    df = jarvis.fetch(JarvisSource(store_dir=str(store), targets=TARGETS))
    assert no_network.calls == []
    assert list(df.columns) == ["material_id", "structure", "structure_format", *TARGETS, "provenance"]
    assert df["material_id"].tolist() == [r["jid"] for r in records]
    assert (df["structure_format"] == "structure").all()
    for canon, key in TARGETS.items():
        assert df[canon].dtype == np.float64
        have = [r.get(key) for r in records]
        assert int(df[canon].notna().sum()) == sum(v is not None for v in have)
        for got, want in zip(df[canon], have):
            if want is None:  # stored as "na" in the zip -> NaN
                assert math.isnan(got)
            else:
                assert got == pytest.approx(float(want), abs=1e-12)
    # the documented coverage of the shared subset (MANIFEST 2a)
    assert int(df["formation_energy_per_atom"].notna().sum()) == 1141
    assert int(df["e_above_hull"].notna().sum()) == 1130

    prov = json.loads(df["provenance"].iloc[0])
    assert prov["source"] == "jarvis" and prov["dataset"] == "dft_3d"
    assert prov["local_store"]["n_records"] == len(records)
    assert prov["database_version"] is None  # a local subset is not passed off as figshare's file
    assert len(prov["zip_sha256"]) == 64


def test_structures_match_the_poscar_strings(store: Path, records: list[dict], no_network):
    df = jarvis.fetch(JarvisSource(store_dir=str(store), targets={"band_gap": "optb88vdw_bandgap"}))
    for structure, rec in zip(df["structure"], records):
        ref = Poscar.from_str(rec["poscar"]).structure
        assert isinstance(structure, Structure)
        assert [s.symbol for s in structure.species] == [s.symbol for s in ref.species], rec["jid"]
        np.testing.assert_allclose(structure.lattice.matrix, ref.lattice.matrix, atol=1e-8, err_msg=rec["jid"])
        np.testing.assert_allclose(structure.frac_coords, ref.frac_coords, atol=1e-8, err_msg=rec["jid"])


def test_absent_zip_without_network_is_a_clear_error(tmp_path: Path, no_network):
    store = tmp_path / "empty_store"
    with pytest.raises(jarvis.JarvisSourceError) as err:
        jarvis.fetch(JarvisSource(store_dir=str(store)))
    msg = str(err.value)
    assert jarvis.store_zip_path(store).name in msg and "prepare_local_store" in msg
    assert no_network.calls, "the download should have been attempted"
    assert list(store.iterdir()) == []  # no partial zip or temporary folder left behind


def test_na_and_non_numeric_values_become_nan(tmp_path: Path, records: list[dict], caplog):
    recs = copy.deepcopy([r for r in records if "formation_energy_peratom" in r][:3])
    recs[0]["formation_energy_peratom"] = "na"
    recs[1]["formation_energy_peratom"] = "not-a-number"
    jarvis.build_figshare_zip(recs, tmp_path)
    with caplog.at_level(logging.WARNING):
        df = jarvis.fetch(JarvisSource(store_dir=str(tmp_path), targets={"ef": "formation_energy_peratom"}))
    assert math.isnan(df["ef"][0]) and math.isnan(df["ef"][1])
    assert df["ef"][2] == pytest.approx(recs[2]["formation_energy_peratom"])
    assert "not numbers" in caplog.text


def test_unknown_target_key_is_a_clear_error(tmp_path: Path, records: list[dict]):
    jarvis.build_figshare_zip(records[:2], tmp_path)
    with pytest.raises(jarvis.JarvisSourceError, match="optb88vdw_bandgapp"):
        jarvis.fetch(JarvisSource(store_dir=str(tmp_path), targets={"band_gap": "optb88vdw_bandgapp"}))


def test_unconvertible_atoms_are_passed_on_raw(tmp_path: Path, records: list[dict]):
    recs = copy.deepcopy(records[:2])
    recs[1]["atoms"]["coords"] = recs[1]["atoms"]["coords"][:-1]  # one coordinate short
    jarvis.build_figshare_zip(recs[:1], tmp_path)  # a valid zip first ...
    # ... then a record jarvis-tools cannot turn into a Structure (zip written by hand)
    info = jarvis.figshare_info("dft_3d")
    path = tmp_path / info["zip_name"]
    with zipfile.ZipFile(path) as zf:
        data = json.loads(zf.read(info["json_name"]))
    bad = copy.deepcopy(data[0])
    bad["jid"] = recs[1]["jid"]
    bad["atoms"] = recs[1]["atoms"]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info["json_name"], json.dumps([data[0], bad]))
    df = jarvis.fetch(JarvisSource(store_dir=str(tmp_path), targets={"band_gap": "optb88vdw_bandgap"}))
    assert df["structure_format"].tolist() == ["structure", "jarvis"]
    assert df["structure"][1] == recs[1]["atoms"]
    with pytest.raises(StructureError):  # ingest's parser then records the reason
        parse_structure(df["structure"][1], "jarvis")


def test_corrupt_or_foreign_zip_is_a_clear_error(tmp_path: Path):
    path = jarvis.store_zip_path(tmp_path)
    path.write_bytes(b"<html>proxy error</html>")
    with pytest.raises(jarvis.JarvisSourceError, match="not a valid zip"):
        jarvis.fetch(JarvisSource(store_dir=str(tmp_path)))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("../../evil.json", "[]")
    with pytest.raises(jarvis.JarvisSourceError, match="does not hold"):
        jarvis.fetch(JarvisSource(store_dir=str(tmp_path)))
    assert not (tmp_path.parent.parent / "evil.json").exists()


def test_unknown_dataset_is_a_clear_error(tmp_path: Path):
    with pytest.raises(jarvis.JarvisSourceError, match="dft_3d"):
        jarvis.fetch(JarvisSource(dataset="dft_3dd", store_dir=str(tmp_path)))


class _FakeResponse:
    """What jarvis-tools reads of a ``requests.get(url, stream=True)`` response."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.headers = {"content-length": str(len(payload))}

    def iter_content(self, block_size: int):
        for i in range(0, len(self.payload), block_size):
            yield self.payload[i : i + block_size]


def test_download_path_checks_and_moves_the_zip(tmp_path: Path, records: list[dict], monkeypatch):
    """The zip-absent branch, with figshare's HTTP answer replayed: a good zip lands in the store,
    a bad answer (an HTML error page) leaves nothing behind."""
    import requests

    good = jarvis.build_figshare_zip(records[:5], tmp_path / "elsewhere")
    urls: list[str] = []

    def fake_get(url, *args, **kwargs):
        urls.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(requests, "get", fake_get)

    payload = b"<html>503 Service Unavailable</html>"
    bad_store = tmp_path / "bad"
    with pytest.raises(jarvis.JarvisSourceError, match="not the expected file"):
        jarvis.fetch(JarvisSource(store_dir=str(bad_store)))
    assert list(bad_store.iterdir()) == []

    payload = good.read_bytes()
    store = tmp_path / "good"
    df = jarvis.fetch(JarvisSource(store_dir=str(store)))
    assert urls == [jarvis.figshare_info("dft_3d")["url"]] * 2
    assert [p.name for p in store.iterdir()] == [good.name]
    assert df["material_id"].tolist() == [r["jid"] for r in records[:5]]
