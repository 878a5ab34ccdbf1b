"""Splits, config validation and the JSON schema kept in step with the typed config."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from matfuse.config import SplitConfig, json_schema, load_config
from matfuse.split import make_splits, read_splits, write_splits

REPO = Path(__file__).resolve().parents[1]


def test_splits_disjoint_cover_seeded(tmp_path):
    ids = [f"mp-{i}" for i in range(1000)]
    s = make_splits(ids, SplitConfig())
    assert set(s["train"]) | set(s["val"]) | set(s["test"]) == set(ids)
    assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"])
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (800, 100, 100)
    assert make_splits(list(reversed(ids)), SplitConfig()) == s  # input order irrelevant
    assert make_splits(ids, SplitConfig(seed=1)) != s
    pd.DataFrame({"material_id": ids}).to_parquet(tmp_path / "e.parquet")
    write_splits(tmp_path / "e.parquet", tmp_path / "s.json", SplitConfig())
    assert read_splits(tmp_path / "s.json") == s


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ValidationError, match="sum to 1"):
        SplitConfig(train=0.8, val=0.3, test=0.1)


@pytest.mark.parametrize(
    "name",
    ["config.yaml", "config/tiny.yaml", "config/paper.yaml", "config/tables.yaml", "config/ecd_tiny.yaml", "config/ecd_paper.yaml"],
)
def test_shipped_configs_validate(name):
    raw = yaml.safe_load((REPO / name).read_text())
    load_config(raw)
    schema = json.loads((REPO / "workflow/schemas/config.schema.json").read_text())
    jsonschema.validate(raw, schema)


def test_schema_file_is_generated_from_typed_config():
    on_disk = json.loads((REPO / "workflow/schemas/config.schema.json").read_text())
    assert on_disk == json_schema(), "run `make schema` after changing src/matfuse/config.py"


def test_typos_and_bad_references_are_rejected():
    base = yaml.safe_load((REPO / "config/tiny.yaml").read_text())
    typo = json.loads(json.dumps(base))
    typo["training"]["epoch"] = 3
    with pytest.raises(ValidationError, match="epoch"):
        load_config(typo)
    bad_enc = json.loads(json.dumps(base))
    bad_enc["training"]["encoders"] = ["scibert"]
    with pytest.raises(ValidationError, match="scibert"):
        load_config(bad_enc)
    bad_name = json.loads(json.dumps(base))
    bad_name["datasets"]["bad/name"] = bad_name["datasets"]["mp"]
    with pytest.raises(ValidationError, match="bad/name"):
        load_config(bad_name)
