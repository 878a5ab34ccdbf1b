"""Crystal graphs: CGCNN neighbour lists of every entry, cached in Parquet (see :mod:`matfuse.graphs.build`)."""

from matfuse.graphs.build import atom_feature_table, build_graphs, cgcnn_atom_init_table, neighbor_graph, read_graphs

__all__ = ["atom_feature_table", "build_graphs", "cgcnn_atom_init_table", "neighbor_graph", "read_graphs"]
