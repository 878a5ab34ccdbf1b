"""Zero-shot evaluation: one trained model scored, without retraining, on other datasets."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from matfuse.io import write_parquet
from matfuse.predict import predict

log = logging.getLogger(__name__)


def predict_zeroshot(
    model_dir: str | Path,
    evalsets: dict[str, dict[str, str | None]],
    out_path: str | Path,
    device: str = "auto",
    variant: str | None = None,
) -> pd.DataFrame:
    """Score every entry of each evaluation set; rows carry ``dataset`` and split ``zeroshot``.

    ``evalsets`` maps a dataset name to its inputs: ``entries`` and, as the model needs them,
    ``graphs`` and ``embeddings`` or ``texts`` (with the text ``variant``). Entries without a prediction (e.g. a rejected graph) keep a
    null ``y_pred`` so the metrics count them instead of dropping them.
    """
    if not evalsets:
        raise ValueError("no zero-shot evaluation set given")
    frames = []
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent if Path(out_path).parent.exists() else None) as tmp:
        for name, inputs in evalsets.items():
            df = predict(
                model_dir=model_dir,
                entries_path=inputs["entries"],
                splits_path=None,
                graphs_path=inputs.get("graphs"),
                embeddings_path=inputs.get("embeddings"),
                out_path=Path(tmp) / f"{name}.parquet",
                device=device,
                texts_path=inputs.get("texts"),
                variant=variant,
            )
            df.insert(0, "dataset", name)
            df["split"] = "zeroshot"
            frames.append(df)
            log.info("zero-shot %s: %d entries", name, len(df))
    out = pd.concat(frames, ignore_index=True)
    write_parquet(out, out_path)
    return out
