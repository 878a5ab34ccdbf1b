"""Robocrystallographer text stage.

- :mod:`matfuse.text.describe`: :func:`~matfuse.text.describe.describe_shard`,
  :func:`~matfuse.text.describe.merge_texts` (sharded, cached, no robocrys import on cache hits).
- :mod:`matfuse.text.robocrys_text`: the three variants (``all`` / ``key`` / ``single``).
- :mod:`matfuse.text.mineral`: exact prefilters for robocrys mineral matching.
- :mod:`matfuse.text.fastpaths` (with :mod:`~matfuse.text.neighbors`,
  :mod:`~matfuse.text.fastnumpy`): exact memoisation of robocrys' repeated neighbour,
  fingerprint and bonding-graph work, numpy short paths for pymatgen's Voronoi/order parameters.
- :mod:`matfuse.text.lazy_prototypes`: defers pymatgen's unused AFLOW prototype library.
- :mod:`matfuse.text.cache`: per-structure text cache.
- :mod:`matfuse.text.settings`: cache-key settings and the version gate of the fast paths
  (applied only with the verified robocrys / pymatgen / matminer / spglib / numpy versions).

Submodules are imported on demand (importing robocrys takes ~20 s).
"""
