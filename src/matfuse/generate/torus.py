"""The flat torus [0, 1)^d of fractional coordinates: wrapped geodesics.

On the flat torus the exponential map is translation followed by wrapping, and the log map is
the shortest wrapped difference (each component in [-1/2, 1/2)). The geodesic from ``x0`` to
``x1`` is ``exp(x0, t · log(x0, x1))``; its velocity is the constant ``log(x0, x1)`` — the
conditional vector field of Riemannian flow matching (Chen & Lipman 2024; FlowMM).
Works on NumPy arrays and torch tensors alike.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

A = TypeVar("A", np.ndarray, torch.Tensor)


def _floor(x: A) -> A:
    return torch.floor(x) if isinstance(x, torch.Tensor) else np.floor(x)


def wrap(x: A) -> A:
    """Points into [0, 1)."""
    return x - _floor(x)


def wrap_centered(v: A) -> A:
    """Tangent vectors into [-1/2, 1/2) (the representative of smallest norm)."""
    return v - _floor(v + 0.5)


def exp_map(x: A, v: A) -> A:
    """The point reached from ``x`` along tangent vector ``v`` in unit time."""
    return wrap(x + v)


def log_map(x0: A, x1: A) -> A:
    """The tangent vector at ``x0`` of the shortest geodesic to ``x1`` (``exp(x0, log(x0, x1)) == x1``)."""
    return wrap_centered(x1 - x0)


def geodesic(x0: A, x1: A, t: A | float) -> A:
    """``x_t`` on the shortest wrapped geodesic (``t`` broadcast against the points)."""
    return exp_map(x0, t * log_map(x0, x1))


def distance(x0: A, x1: A) -> A:
    """Geodesic distance (Euclidean norm of the log map over the last axis)."""
    v = log_map(x0, x1)
    if isinstance(v, torch.Tensor):
        return torch.linalg.vector_norm(v, dim=-1)
    return np.linalg.norm(v, axis=-1)
