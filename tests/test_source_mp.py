"""The ``mp`` source through the real mp-api ``MPRester`` against a local replay server.

The replay server (tests/replay_server.py) answers the routes mp-api calls with documents built
from real rows of the shared MP data (tests/fixtures_mp/); expected values here come from the
shared CSV itself (CIF parsed by pymatgen, target columns), never from the code under test.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_server import ReplayServer, Reply, load_mp_fixture, mp_routes  # noqa: E402

from matfuse.config import MPSource  # noqa: E402
from matfuse.sources import mp  # noqa: E402

#: Recognisable fake key (mp-api insists on 32 characters).
FAKE_KEY = "MATFUSE_TEST_KEY_DO_NOT_LEAK_000"
assert len(FAKE_KEY) == 32

TARGETS = ["formation_energy_per_atom", "band_gap", "efermi", "total_magnetization"]


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return load_mp_fixture("summary_docs.json")


@pytest.fixture(scope="module")
def source_rows(mp_csv: Path, docs: list[dict]) -> pd.DataFrame:
    """The shared CSV rows the fixture documents were built from, indexed by material_id."""
    ids = {d["material_id"] for d in docs}
    df = pd.read_csv(mp_csv)
    return df[df["material_id"].isin(ids)].set_index("material_id")


@pytest.fixture()
def server(docs: list[dict]):
    with ReplayServer(mp_routes(docs)) as srv:
        yield srv


@pytest.fixture()
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MP_API_KEY", FAKE_KEY)
    return FAKE_KEY


def _cif_structure(cif: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif")


def _summary_requests(server: ReplayServer):
    return server.requests_to("/materials/summary")


def test_fetch_pages_and_round_trips_real_structures(server, key, docs, source_rows, caplog):
    caplog.set_level(logging.INFO)
    cfg = MPSource(endpoint=server.url, targets=TARGETS, chunk_size=7)
    df = mp.fetch(cfg)

    # paging: ceil(30 / 7) = 5 requests with _skip 0, 7, 14, 21, 28 and the right _limit
    reqs = _summary_requests(server)
    n = len(docs)
    assert len(reqs) == math.ceil(n / 7)
    assert [int(r.params.get("_skip", 0)) for r in reqs] == list(range(0, n, 7))
    assert sum(int(r.params["_limit"]) for r in reqs) == n
    assert all(set(r.params["_fields"].split(",")) == {"material_id", "structure", *TARGETS} for r in reqs)
    assert all(r.headers.get("x-api-key") == FAKE_KEY for r in reqs)  # the key from the env var is used
    assert not server.unknown and not server.errors
    assert "every summary document" in caplog.text  # empty criteria warned about

    # contract columns
    assert list(df.columns) == ["material_id", "structure", "structure_format", *TARGETS, "provenance"]
    assert df["material_id"].tolist() == [d["material_id"] for d in docs]
    assert (df["structure_format"] == "structure").all()
    for t in TARGETS:
        assert df[t].dtype == np.float64

    # structures equal the source CIF structures; targets equal the source columns
    for _, row in df.iterrows():
        src = source_rows.loc[row["material_id"]]
        ref = _cif_structure(src["cif"])
        got = row["structure"]
        assert isinstance(got, Structure)
        assert [sp.symbol for sp in got.species] == [sp.symbol for sp in ref.species]
        np.testing.assert_allclose(got.lattice.matrix, ref.lattice.matrix, atol=1e-10)
        np.testing.assert_allclose(got.frac_coords, ref.frac_coords, atol=1e-10)
        for t in TARGETS:
            if pd.isna(src[t]):
                assert math.isnan(row[t]), (row["material_id"], t)
            else:
                assert row[t] == pytest.approx(float(src[t]), abs=1e-12), (row["material_id"], t)
    assert df["efermi"].isna().sum() == source_rows["efermi"].isna().sum() == 1  # mp-10810

    prov = json.loads(df["provenance"].iloc[0])
    assert prov["source"] == "mp"
    assert prov["endpoint"] == server.url
    assert prov["database_version"] == load_mp_fixture("heartbeat.json")["db_version"]
    assert prov["n_documents"] == n and prov["retrieved_at"]


def test_criteria_are_passed_through_and_honoured(server, key, docs, source_rows):
    criteria = {"num_sites": [1, 4], "elements": ["Li"], "band_gap": [0.0, 10.0]}
    df = mp.fetch(MPSource(endpoint=server.url, criteria=criteria, targets=["band_gap"], chunk_size=100))
    (req,) = _summary_requests(server)
    assert req.params["nsites_min"] == "1" and req.params["nsites_max"] == "4"
    assert req.params["elements"] == "Li"
    assert float(req.params["band_gap_min"]) == 0.0 and float(req.params["band_gap_max"]) == 10.0
    # expected set from the source CIFs, independently of the replay filter
    expected = [
        mid
        for mid in [d["material_id"] for d in docs]
        if (s := _cif_structure(source_rows.loc[mid, "cif"])) is not None
        and len(s) <= 4
        and "Li" in {e.symbol for e in s.composition.elements}
    ]
    assert expected, "fixture should hold small Li compounds"
    assert df["material_id"].tolist() == expected
    assert json.loads(df["provenance"].iloc[0])["criteria"] == criteria


def test_num_chunks_stops_early(server, key):
    df = mp.fetch(MPSource(endpoint=server.url, chunk_size=5, num_chunks=2, targets=["band_gap"]))
    assert len(df) == 10
    assert len(_summary_requests(server)) == 2


def test_missing_key_is_a_clear_error(server, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(mp.MPSourceError) as err:
        mp.fetch(MPSource(endpoint=server.url))
    msg = str(err.value)
    assert "MP_API_KEY" in msg and "export" in msg and "envvars" in msg
    assert server.requests == []  # failed before any request

    monkeypatch.delenv("MY_MP_KEY", raising=False)
    with pytest.raises(mp.MPSourceError, match="MY_MP_KEY"):
        mp.fetch(MPSource(endpoint=server.url, api_key_env="MY_MP_KEY"))


def test_malformed_key_rejected_without_echo(server, monkeypatch):
    bad = "NOT_A_REAL_KEY_12345"
    monkeypatch.setenv("MP_API_KEY", bad)
    with pytest.raises(mp.MPSourceError, match="32 characters") as err:
        mp.fetch(MPSource(endpoint=server.url))
    assert bad not in str(err.value)


def test_key_never_leaks_to_logs_outputs_or_errors(server, key, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # everything, including urllib3 / mp-api debug records
    df = mp.fetch(MPSource(endpoint=server.url, criteria={"num_sites": [1, 20]}, chunk_size=4))
    # an error path: a criterion the replay server refuses (400) -> MPRestError -> MPSourceError
    with pytest.raises(mp.MPSourceError) as err:
        mp.fetch(MPSource(endpoint=server.url, criteria={"is_stable": True}))
    assert "is_stable" in str(err.value) and "does not support the request" in str(err.value)
    out, errout = capfd.readouterr()
    texts = [
        caplog.text,
        "\n".join(str(r.args) for r in caplog.records),
        out,
        errout,
        str(err.value),
        repr(err.value.__cause__),
        df.drop(columns=["structure"]).to_json(),
        df["provenance"].iloc[0],
    ]
    assert caplog.records, "expected log records to inspect"
    for text in texts:
        assert FAKE_KEY not in text


def test_unknown_target_field_is_a_clear_error(server, key):
    with pytest.raises(mp.MPSourceError, match="not_a_summary_field"):
        mp.fetch(MPSource(endpoint=server.url, targets=["band_gap", "not_a_summary_field"]))


def test_unknown_criterion_is_a_clear_error(server, key):
    with pytest.raises(mp.MPSourceError, match="bogus_kw") as err:
        mp.fetch(MPSource(endpoint=server.url, criteria={"bogus_kw": 3}))
    assert "\x1b[" not in str(err.value)  # mp-api's colour codes stripped


def test_unreachable_endpoint_is_a_clear_error(key):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(mp.MPSourceError, match="failed") as err:
        mp.fetch(MPSource(endpoint=f"http://127.0.0.1:{port}/"))
    assert FAKE_KEY not in str(err.value)


def test_reserved_criteria_rejected_by_config():
    with pytest.raises(ValueError, match="chunk_size"):
        MPSource(criteria={"chunk_size": 10})
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        MPSource(api_key_env="has spaces-and-dashes")


def test_replay_server_reports_unknown_routes_and_extra_routes(caplog):
    import requests

    routes = mp_routes([])
    routes["/materials/tasks/{task_id}"] = lambda req: Reply(200, {"data": [{"task_id": req.path_params["task_id"]}]})
    with ReplayServer(routes) as srv:
        assert requests.get(srv.url + "materials/tasks/mp-1/", timeout=5).json() == {"data": [{"task_id": "mp-1"}]}
        with caplog.at_level(logging.ERROR, logger="replay_server"):
            r = requests.get(srv.url + "materials/nope/", timeout=5)
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
        assert [u.path for u in srv.unknown] == ["/materials/nope/"]
        assert "NO ROUTE" in caplog.text


def test_no_match_gives_an_empty_table_with_the_contract_columns(server, key):
    df = mp.fetch(MPSource(endpoint=server.url, criteria={"num_sites": [500, 600]}, targets=["band_gap"]))
    assert len(df) == 0
    assert list(df.columns) == ["material_id", "structure", "structure_format", "band_gap", "provenance"]


def test_nested_target_fields_are_mapped_to_canonical_names():
    """k_vrh lives at bulk_modulus.vrh in summary documents; the column is named k_vrh."""
    from matfuse.sources.mp import docs_to_frame

    docs = [
        {"material_id": "mp-1", "structure": None, "band_gap": 1.0, "bulk_modulus": {"vrh": 97.5, "voigt": 99.0}},
        {"material_id": "mp-2", "structure": None, "band_gap": 0.0, "bulk_modulus": None},
    ]
    out = docs_to_frame(docs, {"band_gap": "band_gap", "k_vrh": "bulk_modulus.vrh"}, "{}")
    assert list(out.columns[:5]) == ["material_id", "structure", "structure_format", "band_gap", "k_vrh"]
    assert out.loc[0, "k_vrh"] == 97.5 and np.isnan(out.loc[1, "k_vrh"])
