"""numpy with exact short paths for ``cross`` / ``linalg.norm`` on single float64 vectors.

pymatgen's Voronoi solid angles and order parameters call ``np.cross`` and ``np.linalg.norm``
hundreds of thousands of times per structure on length-3 vectors, where numpy's argument
handling costs more than the arithmetic. :func:`fast_cross` and :func:`fast_norm` do the very
same IEEE operations for that case and hand every other call to numpy. :data:`NUMPY_VIEW` is a
module object with numpy's namespace and these two functions, which
:func:`matfuse.text.fastpaths.fast_paths` installs as ``pymatgen.core.local_env.np`` while a
structure is described.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

_NDARRAY = np.ndarray
_F64 = np.dtype(np.float64)


def fast_cross(a: Any, b: Any, *args: Any, **kwargs: Any) -> Any:
    """``np.cross``; for two float64 vectors of length 3 the same operations without the overhead.

    numpy computes each component as ``multiply`` then ``subtract`` of float64 values
    (``cp0 = a1*b2; cp0 -= a2*b1``, ...): two correctly rounded products, then a correctly
    rounded difference, exactly what the Python float expression below does.
    """
    if (
        not args
        and not kwargs
        and type(a) is _NDARRAY
        and type(b) is _NDARRAY
        and a.shape == (3,)
        and b.shape == (3,)
        and a.dtype == _F64
        and b.dtype == _F64
    ):
        a0, a1, a2 = a.tolist()
        b0, b1, b2 = b.tolist()
        return np.array((a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0))
    return np.cross(a, b, *args, **kwargs)


def fast_norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:  # noqa: A002
    """``np.linalg.norm``; for a float64 array with default arguments numpy's own fast case
    (``sqrt(x.ravel().dot(x.ravel()))``, a ``np.float64``) without the argument handling."""
    if ord is None and axis is None and not keepdims and type(x) is _NDARRAY and x.dtype == _F64:
        r = x.ravel(order="K")
        return np.sqrt(r.dot(r))
    return np.linalg.norm(x, ord, axis, keepdims)


def _module_view(module: types.ModuleType, name: str, **overrides: Any) -> types.ModuleType:
    """A module object with ``module``'s namespace (plain dict look-ups) plus ``overrides``;
    names it does not hold yet (numpy's lazily loaded ones) are fetched from ``module``."""
    view = types.ModuleType(name)
    view.__dict__.update(vars(module))
    view.__dict__.update(overrides)
    view.__dict__["__getattr__"] = lambda attr: getattr(module, attr)
    return view


#: ``numpy`` with :func:`fast_cross` and ``linalg.norm`` = :func:`fast_norm`
NUMPY_VIEW = _module_view(
    np, "matfuse_numpy_view", cross=fast_cross, linalg=_module_view(np.linalg, "matfuse_linalg_view", norm=fast_norm)
)
