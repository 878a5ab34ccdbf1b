"""Datasets and loaders: entries + graphs + cached text embeddings or text tokens -> PyG batches.

Each material becomes one ``torch_geometric.data.Data`` built once (no per-epoch
featurisation): ``z`` (atomic numbers), ``edge_index`` ([neighbour, centre]), ``edge_dist``
(Å; the Gaussian expansion is done by the model on the batch), ``edge_vec`` ``(E, 3)`` (bond
vectors, Å; only where the graphs table has them, see :func:`matfuse.graphs.read_graphs`),
``text`` ``(1, D)`` (a cached embedding), or ``input_ids`` / ``attention_mask`` ``(1, L)`` (token
ids of the text for models that fine-tune the encoder, padded to the longest text of the set; the
model trims each batch to its own longest), ``y`` (raw target, NaN when unknown) and ``idx`` (row
in the caller's id list).  Batching is PyG's ``DataLoader``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from matfuse.graphs import read_graphs

log = logging.getLogger(__name__)


def read_target(entries_path: str | Path, target: str | None) -> pd.DataFrame:
    """``material_id`` and ``y`` (float64, NaN where unknown) from the entries table.

    ``target=None`` gives an all-NaN ``y`` (unlabelled zero-shot data).  A ``target`` the
    table lacks raises ``KeyError`` naming the column and the columns present.
    """
    schema = pq.read_schema(entries_path)
    if target is not None and target not in schema.names:
        raise KeyError(
            f"{entries_path}: no target column {target!r} (columns: {', '.join(schema.names)})"
        )
    cols = ["material_id"] + ([target] if target is not None else [])
    df = pq.read_table(entries_path, columns=cols).to_pandas()
    out = pd.DataFrame({"material_id": df["material_id"].astype(str)})
    out["y"] = pd.to_numeric(df[target], errors="coerce").astype("float64") if target else np.nan
    if out["material_id"].duplicated().any():
        dup = out.loc[out["material_id"].duplicated(), "material_id"].iloc[0]
        raise ValueError(f"{entries_path}: duplicate material_id {dup!r}")
    return out


def read_splits(path: str | Path, fold: int | None = None, target: str | None = None) -> dict[str, list[str]]:
    """``splits.json`` -> ``{split: [ids]}`` of one split; every value must be a list of ids.

    A k-fold file (``"folds": [...]``) needs ``fold``; a file with one split per target
    (``"targets": {target: ...}``, split kind column with ``{target}``) needs ``target``; other
    files ignore it.
    """
    with open(path) as fh:
        splits = json.load(fh)
    if not isinstance(splits, dict):
        raise ValueError(f"{path}: expected a JSON object of split -> id list")
    if "folds" in splits:
        folds = splits["folds"]
        if fold is None:
            raise ValueError(f"{path} holds {len(folds)} folds (split kind kfold): say which fold")
        if not 0 <= fold < len(folds):
            raise ValueError(f"{path}: no fold {fold} (it holds folds 0..{len(folds) - 1})")
        splits = folds[fold]
    elif fold is not None:
        raise ValueError(f"{path} is not a k-fold split file, but fold {fold} was asked for")
    if "targets" in splits:
        per = splits["targets"]
        if target not in per:
            raise ValueError(f"{path} holds one split per target ({sorted(per)}); none for {target!r}")
        splits = per[target]
    out: dict[str, list[str]] = {}
    for name, ids in splits.items():
        if isinstance(ids, list):
            out[name] = [str(i) for i in ids]
    for name in ("train", "val"):
        if name not in out:
            log.debug("%s has no %r split", path, name)
    return out


def read_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """Text embedding Parquet (material_id, embedding fixed_size_list<float32>) -> {id: (D,) float32}."""
    table = pq.read_table(path, columns=["material_id", "embedding"])
    ids = table.column("material_id").to_pylist()
    col = table.column("embedding").combine_chunks()
    if len(ids) == 0:
        return {}
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    width = len(flat) // len(ids)
    if width * len(ids) != len(flat):
        raise ValueError(f"{path}: embeddings have unequal lengths (need a fixed-size list column)")
    mat = flat.reshape(len(ids), width)
    if not np.isfinite(mat).all():
        bad = ids[int(np.where(~np.isfinite(mat).all(axis=1))[0][0])]
        raise ValueError(f"{path}: non-finite embedding for {bad!r}")
    return dict(zip(ids, mat))


def read_tokens(
    texts_path: str | Path, variant: str, encoder: str, max_length: int
) -> dict[str, np.ndarray]:
    """Token ids of column ``text_{variant}`` of a texts table -> ``{id: (n,) int32}``.

    Tokenised with the encoder's tokenizer by the embedding stage's own function
    (:func:`matfuse.embed.text.tokenize`: truncation to ``max_length`` with special tokens), so a
    fine-tuned model sees the same tokens a frozen embedding was computed from. Empty texts are
    left out (the caller counts them as missing input).
    """
    from matfuse.embed.text import tokenize
    from matfuse.models.text_encoder import load_tokenizer

    column = f"text_{variant}"
    schema = pq.read_schema(texts_path)
    if "material_id" not in schema.names or column not in schema.names:
        raise KeyError(f"{texts_path}: needs columns 'material_id' and {column!r}; found {schema.names}")
    df = pq.read_table(texts_path, columns=["material_id", column]).to_pandas()
    df = df[df[column].fillna("").str.strip() != ""]
    if df.empty:
        return {}
    tok = tokenize(df[column].tolist(), load_tokenizer(encoder), max_length)
    return {str(m): np.asarray(ids, dtype=np.int32) for m, ids in zip(df["material_id"], tok.input_ids)}


def build_data(
    ids: Iterable[str],
    y: Iterable[float],
    inputs: frozenset[str] | set[str],
    graphs: dict[str, dict[str, np.ndarray]] | None = None,
    embeddings: dict[str, np.ndarray] | None = None,
    tokens: dict[str, np.ndarray] | None = None,
) -> tuple[list[Data], list[dict[str, Any]]]:
    """One ``Data`` per material that has every input in ``inputs`` ({"graph", "text", "tokens"}).

    Returns (data list, missing) where ``missing`` rows are ``{material_id, reason}`` for
    materials lacking a graph (rejected at the graph stage), a text embedding or a text.
    ``Data.idx`` is the position in ``ids`` so callers can map predictions back.
    """
    if "graph" in inputs and graphs is None:
        raise ValueError("this model needs graphs but no graphs table was given")
    if "text" in inputs and embeddings is None:
        raise ValueError("this model needs text embeddings but no embeddings table was given")
    if "tokens" in inputs and tokens is None:
        raise ValueError("this model needs text tokens but no texts table was given")
    ids = list(ids)
    width = 1
    if "tokens" in inputs:
        width = max([len(tokens.get(i, ())) for i in ids] + [1])  # type: ignore[union-attr]
    out: list[Data] = []
    missing: list[dict[str, Any]] = []
    for k, (material_id, target) in enumerate(zip(ids, y)):
        fields: dict[str, Any] = {
            "y": torch.tensor([target], dtype=torch.float32),
            "idx": torch.tensor([k], dtype=torch.long),
        }
        if "graph" in inputs:
            g = graphs.get(material_id)  # type: ignore[union-attr]
            if g is None:
                missing.append({"material_id": material_id, "reason": "no graph (rejected at graph stage?)"})
                continue
            z = torch.from_numpy(g["atomic_numbers"].astype(np.int64))
            fields["z"] = z
            fields["edge_index"] = torch.from_numpy(
                np.stack([g["edge_src"], g["edge_dst"]]).astype(np.int64)
            )
            fields["edge_dist"] = torch.from_numpy(g["edge_dist"].astype(np.float32))
            if "edge_vec" in g:
                fields["edge_vec"] = torch.from_numpy(np.asarray(g["edge_vec"]).astype(np.float32).reshape(-1, 3))
            fields["num_nodes"] = int(z.shape[0])
        else:
            fields["num_nodes"] = 0
        if "text" in inputs:
            e = embeddings.get(material_id)  # type: ignore[union-attr]
            if e is None:
                missing.append({"material_id": material_id, "reason": "no text embedding"})
                continue
            fields["text"] = torch.from_numpy(np.array(e, dtype=np.float32)).unsqueeze(0)
        if "tokens" in inputs:
            t = tokens.get(material_id)  # type: ignore[union-attr]
            if t is None:
                missing.append({"material_id": material_id, "reason": "no text (empty or missing description)"})
                continue
            padded = np.zeros((1, width), dtype=np.int64)
            padded[0, : len(t)] = t
            mask = np.zeros((1, width), dtype=np.int64)
            mask[0, : len(t)] = 1
            fields["input_ids"] = torch.from_numpy(padded)
            fields["attention_mask"] = torch.from_numpy(mask)
        out.append(Data(**fields))
    return out, missing


def load_inputs(
    inputs: frozenset[str] | set[str],
    graphs_path: str | Path | None,
    embeddings_path: str | Path | None,
) -> tuple[dict[str, dict[str, np.ndarray]] | None, dict[str, np.ndarray] | None]:
    """Read the graph and/or embedding tables a model needs (clear error when one is missing;
    token ids: :func:`read_tokens`)."""
    graphs = embeddings = None
    if "graph" in inputs:
        if graphs_path is None:
            raise ValueError("this model needs a graphs table (graphs_path is None)")
        graphs = read_graphs(graphs_path)
    if "text" in inputs:
        if embeddings_path is None:
            raise ValueError("this model needs a text embeddings table (embeddings_path is None)")
        embeddings = read_embeddings(embeddings_path)
    return graphs, embeddings


def text_dim(embeddings: dict[str, np.ndarray] | None) -> int | None:
    """Width of the embedding vectors (None without embeddings)."""
    if not embeddings:
        return None
    return int(next(iter(embeddings.values())).shape[0])


def make_loader(
    data: list[Data],
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """PyG ``DataLoader`` with a seeded shuffle order (reproducible epochs)."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        drop_last=False,
    )
