"""Precomputed descriptions (``matfuse.text.precomputed``) on real texts.

Tables: the real TextEdge CSVs (``shared/data/text_llmprop_textedge``, MIT), and small tables
written from their rows. MP: the real mp-api ``MPRester`` against the local replay server, which
serves ``tests/fixtures_mp/robocrys_docs.json`` (five TextEdge rows as robocrys documents).
Expected texts are read from the CSVs with the standard ``csv`` module, not with the code under
test.
"""

from __future__ import annotations

import csv
import json
import logging
import socket
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_server import ReplayServer, load_mp_fixture, mp_routes, summary_handler  # noqa: E402

from matfuse.config import DescriptionsMP, DescriptionsTable  # noqa: E402
from matfuse.sources.mp import MPSourceError  # noqa: E402
from matfuse.text.precomputed import STAGE, read_descriptions  # noqa: E402

#: Recognisable fake key (mp-api insists on 32 characters).
FAKE_KEY = "MATFUSE_TEST_KEY_DO_NOT_LEAK_000"
assert len(FAKE_KEY) == 32

SPLITS = ["train", "valid", "test"]


@pytest.fixture(scope="module")
def textedge(shared_data: Path) -> dict[str, Path]:
    return {s: shared_data / "text_llmprop_textedge" / f"textedge_prop_mp22_{s}.csv" for s in SPLITS}


def _csv_texts(path: Path) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["material_id"]: row["description"] for row in csv.DictReader(fh)}


# ----------------------------------------------------------------------------- table kind
@pytest.mark.parametrize("split", SPLITS)
def test_table_returns_exactly_the_files_texts(textedge, split):
    path = textedge[split]
    texts = _csv_texts(path)
    others = {m for s in SPLITS if s != split for m in _csv_texts(textedge[s])}
    inside = list(texts)[:4]
    outside = sorted(others - set(texts))[:3] + ["mp-149"]
    ids = [outside[0], *inside, *outside[1:]]
    df, problems = read_descriptions(DescriptionsTable(path=str(path)), ids)
    assert problems == []
    assert list(df.columns) == ["material_id", "text", "source"]
    assert df["material_id"].tolist() == inside  # requested order, absent ids simply missing
    assert df["text"].tolist() == [texts[m] for m in inside]
    assert (df["source"] == f"table:{path}").all()
    # ids of the file that were not requested are ignored
    assert not set(df["material_id"]) - set(ids)


def test_table_id_prefix_and_integer_ids(textedge, tmp_path):
    texts = _csv_texts(textedge["train"])
    src = pd.read_csv(textedge["train"], usecols=["material_id", "description"])
    src["material_id"] = src["material_id"].str.removeprefix("mp-").astype(int)
    src = src.rename(columns={"material_id": "id", "description": "robocrys"})
    src.loc[len(src)] = [None, "a row without id is ignored"]  # the ids become floats (7.0)
    path = tmp_path / "numbers.csv"
    src.to_csv(path, index=False)
    want = list(texts)[10:15]
    cfg = DescriptionsTable(path=str(path), id_column="id", text_column="robocrys", id_prefix="mp-")
    df, problems = read_descriptions(cfg, [*want, "mp-149"])
    assert problems == []
    assert df["material_id"].tolist() == want
    assert df["text"].tolist() == [texts[m] for m in want]
    # without the prefix nothing matches
    df, _ = read_descriptions(DescriptionsTable(path=str(path), id_column="id", text_column="robocrys"), want)
    assert df.empty and list(df.columns) == ["material_id", "text", "source"]


def test_table_missing_column_is_a_clear_error(textedge):
    path = textedge["valid"]
    with pytest.raises(ValueError) as err:
        read_descriptions(DescriptionsTable(path=str(path), text_column="text_all"), ["mp-23995"])
    msg = str(err.value)
    assert str(path) in msg and "text_column 'text_all'" in msg and "description" in msg  # lists what it has
    with pytest.raises(ValueError, match="id_column 'mpid'.*text_column 'txt'.*are not columns"):
        read_descriptions(DescriptionsTable(path=str(path), id_column="mpid", text_column="txt"), [])
    with pytest.raises(ValueError, match="not found"):
        read_descriptions(DescriptionsTable(path=str(path.with_name("nope.csv"))), [])


def test_table_unusable_texts_are_problems(textedge, tmp_path):
    rows = list(_csv_texts(textedge["test"]).items())
    (a, ta), (b, _), (c, _), (d, td1), (e, te), (_, td2), (f, tf) = rows[:7]
    table = pd.DataFrame(
        [
            (a, ta),
            (b, ""),  # empty cell (read back as missing)
            (c, "   \n"),  # only whitespace
            (d, td1),
            (d, td2),  # same id, another text
            (e, te),
            (e, te),  # same id, same text: kept once
            (f, tf),
        ],
        columns=["material_id", "description"],
    )
    path = tmp_path / "texts.csv"
    table.to_csv(path, index=False)
    ids = [a, b, c, d, e, f, "mp-149"]
    df, problems = read_descriptions(DescriptionsTable(path=str(path)), ids)
    assert df["material_id"].tolist() == [a, e, f]
    assert df["text"].tolist() == [ta, te, tf]
    by_id = {p["material_id"]: p for p in problems}
    assert list(by_id) == [b, c, d] and len(problems) == 3
    assert all(p["stage"] == STAGE == "describe:precomputed" for p in problems)
    assert "missing" in by_id[b]["reason"]
    assert "whitespace" in by_id[c]["reason"]
    assert "2 different texts" in by_id[d]["reason"] and "none used" in by_id[d]["reason"]
    assert all(str(path) in p["reason"] for p in problems)
    # every requested id is accounted for: a text, a problem, or absent from the table
    assert set(df["material_id"]) | set(by_id) | {"mp-149"} == set(ids)


def test_table_non_string_and_empty_string_in_json_lines(textedge, tmp_path):
    (a, ta), (b, _), (c, _) = list(_csv_texts(textedge["valid"]).items())[:3]
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"material_id": a, "description": ta},
        {"material_id": b, "description": 42},
        {"material_id": c, "description": ""},
    ]) + "\n")
    df, problems = read_descriptions(DescriptionsTable(path=str(path)), [a, b, c])
    assert df["text"].tolist() == [ta]
    reasons = {p["material_id"]: p["reason"] for p in problems}
    assert "not a string (int" in reasons[b]
    assert "empty" in reasons[c]


# ----------------------------------------------------------------------------- mp kind
@pytest.fixture(scope="module")
def robocrys_docs() -> list[dict]:
    return load_mp_fixture("robocrys_docs.json")


def _server(docs: list[dict]) -> ReplayServer:
    routes = mp_routes([])
    routes["/materials/robocrys"] = summary_handler(docs)  # same paging/projection/id filter
    return ReplayServer(routes)


@pytest.fixture()
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MP_API_KEY", FAKE_KEY)
    return FAKE_KEY


def test_fixture_texts_are_the_textedge_texts(textedge, robocrys_docs):
    texts = _csv_texts(textedge["test"])
    from emmet.core.robocrys import RobocrystallogapherDoc

    assert len(robocrys_docs) == 5
    for doc in robocrys_docs:
        assert doc["description"] == texts[doc["material_id"]]
        RobocrystallogapherDoc.model_validate(doc)  # the served shape is emmet's document


def test_mp_kind_through_replay_server(textedge, robocrys_docs, key, caplog):
    caplog.set_level(logging.DEBUG)  # everything, including urllib3 / mp-api debug records
    texts = _csv_texts(textedge["test"])
    served = [d["material_id"] for d in robocrys_docs]
    ids = [*served[:4], "mp-149", "JVASP-1002"]  # 5 MP ids (one not served) + one non-MP id
    with _server(robocrys_docs) as server:
        df, problems = read_descriptions(DescriptionsMP(endpoint=server.url, chunk_size=2), ids)
        reqs = server.requests_to("/materials/robocrys")
        assert not server.unknown and not server.errors
    assert problems == []
    assert df["material_id"].tolist() == served[:4]
    assert df["text"].tolist() == [texts[m] for m in served[:4]]
    db_version = load_mp_fixture("heartbeat.json")["db_version"]
    assert (df["source"] == f"mp:robocrys (database version {db_version})").all()

    # chunking: 5 MP ids, 2 per request -> 3 requests, each for its own chunk
    assert [r.params["material_ids"].split(",") for r in reqs] == [served[:2], served[2:4], ["mp-149"]]
    assert all(set(r.params["_fields"].split(",")) == {"material_id", "description"} for r in reqs)
    assert all(r.headers.get("x-api-key") == FAKE_KEY for r in reqs)  # the env var's key was used
    assert "not Materials Project ids" in caplog.text  # JVASP-1002 was not sent

    assert caplog.records
    for text in [caplog.text, "\n".join(str(r.args) for r in caplog.records), df.to_json(), str(problems)]:
        assert FAKE_KEY not in text


def test_mp_kind_unusable_served_text_is_a_problem(robocrys_docs, key):
    docs = [dict(d) for d in robocrys_docs]
    docs[1]["description"] = "  "
    ids = [d["material_id"] for d in docs]
    with _server(docs) as server:
        df, problems = read_descriptions(DescriptionsMP(endpoint=server.url), ids)
        assert len(server.requests_to("/materials/robocrys")) == 1  # chunk_size 500
        assert not server.unknown
    assert df["material_id"].tolist() == [ids[0], *ids[2:]]
    assert [(p["material_id"], p["stage"]) for p in problems] == [(ids[1], STAGE)]
    assert "whitespace" in problems[0]["reason"] and "mp:robocrys" in problems[0]["reason"]


def test_mp_kind_unreachable_endpoint_and_missing_key(key, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(RuntimeError, match="failed") as err:
        read_descriptions(DescriptionsMP(endpoint=url), ["mp-149"])
    assert isinstance(err.value, MPSourceError)
    assert f"127.0.0.1:{port}" in str(err.value) and FAKE_KEY not in str(err.value)

    monkeypatch.delenv("MP_API_KEY")
    with pytest.raises(RuntimeError, match="MP_API_KEY"):
        read_descriptions(DescriptionsMP(endpoint=url), ["mp-149"])


def test_merge_texts_uses_precomputed_all_texts_and_records_the_source(textedge, tmp_path):
    """Shards as robocrys writes them + a TextEdge table: the table's text replaces 'all' where it has
    one, key/single stay robocrys', a robocrys failure with a table text is kept (and still a reject)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from matfuse.text.describe import LOCAL_SOURCE, SHARD_SCHEMA, merge_texts

    rows = [{"material_id": k, "description": v} for k, v in list(_csv_texts(textedge["test"]).items())[:3]]
    ids = [r["material_id"] for r in rows]
    shard = pd.DataFrame({
        "material_id": ids + ["mp-0-not-in-table"],
        "text_all": ["local all 1", None, "local all 3", "local all 4"],
        "text_key": ["key 1", None, "key 3", "key 4"],
        "text_single": ["single 1", None, "single 3", "single 4"],
        "status": ["ok", "failed", "ok", "ok"],
        "error": [None, "ValueError: robocrys could not condense", None, None],
        "seconds": [1.0, 0.5, 1.0, 1.0],
        "cached": [False] * 4,
    })
    pq.write_table(pa.Table.from_pandas(shard, schema=SHARD_SCHEMA, preserve_index=False), tmp_path / "0.parquet")
    table = tmp_path / "texts.csv"
    pd.DataFrame({"material_id": ids, "description": [r["description"] for r in rows]}).to_csv(table, index=False)
    cfg = DescriptionsTable(path=str(table))
    texts = merge_texts([tmp_path / "0.parquet"], tmp_path / "texts.parquet", tmp_path / "rejects.parquet", descriptions=cfg)
    by = texts.set_index("material_id")
    for r in rows:
        assert by.loc[r["material_id"], "text_all"] == r["description"]
        assert by.loc[r["material_id"], "text_source"] == f"table:{table}"
    assert by.loc[ids[0], "text_key"] == "key 1" and pd.isna(by.loc[ids[1], "text_key"])
    assert by.loc["mp-0-not-in-table", "text_all"] == "local all 4"
    assert by.loc["mp-0-not-in-table", "text_source"] == LOCAL_SOURCE
    rejects = pd.read_parquet(tmp_path / "rejects.parquet")
    assert list(rejects["material_id"]) == [ids[1]]
    assert "kept, no key/single" in rejects["reason"].iloc[0]
    written = pd.read_parquet(tmp_path / "texts.parquet")
    assert list(written.columns) == ["material_id", "text_all", "text_key", "text_single", "text_source"]
