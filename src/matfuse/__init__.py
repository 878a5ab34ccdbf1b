"""matfuse: crystal databases -> multimodal (graph + text + density) property prediction."""

__version__ = "0.1.0"
