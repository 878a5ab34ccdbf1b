"""Pluggable graph encoders for the multimodal models.

A backbone is an ``nn.Module`` with ``encode(batch) -> (atom_features (N, atom_dim),
crystal_vector (B, embed_dim))``, the properties ``atom_dim`` / ``embed_dim``, and
``to_config()``.  Register new ones in :data:`GRAPH_BACKBONES`.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from matfuse.models.alignn import ALIGNN
from matfuse.models.cgcnn import CGCNN
from matfuse.models.mdl_cgcnn import MDLCGCNN

GRAPH_BACKBONES: dict[str, Callable[..., nn.Module]] = {"cgcnn": CGCNN, "mdl_cgcnn": MDLCGCNN, "alignn": ALIGNN}


def build_backbone(name: str, config: dict[str, Any]) -> nn.Module:
    """Build a registered graph backbone from its constructor kwargs (``name`` key ignored)."""
    if name not in GRAPH_BACKBONES:
        raise ValueError(f"unknown graph backbone {name!r}; known: {sorted(GRAPH_BACKBONES)}")
    kwargs = {k: v for k, v in config.items() if k != "name"}
    return GRAPH_BACKBONES[name](**kwargs)
