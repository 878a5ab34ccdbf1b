"""Fine-tuned text baseline (the papers' "SciBERT" row): a sequence-regression head on the encoder.

``HFTextEncoder`` (pooled, default BERT's ``pooler`` as in ``BertForSequenceClassification``)
-> dropout -> ``Linear(hidden, 1)``; every encoder weight is trained (recipe: AdamW lr 2e-5,
batch 16, 10 epochs). Today's ``text`` model is the frozen-embedding MLP beside it.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from matfuse.models.text_encoder import HFTextEncoder


class TextFinetuneConfig(BaseModel):
    """Constructor settings of :class:`TextFinetune`."""

    model_config = ConfigDict(extra="forbid")

    text: dict[str, Any] = Field(description="Constructor settings of the text encoder (TextEncoderConfig).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Before the head (BERT's classifier dropout 0.1).")


class TextFinetune(nn.Module):
    """Regressor on ``batch.input_ids`` / ``batch.attention_mask`` with the encoder fine-tuned."""

    name = "text_finetune"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        c = TextFinetuneConfig(**kwargs)
        self.text = HFTextEncoder(**c.text)
        self.cfg = c.model_copy(update={"text": self.text.to_config()})
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(self.text.hidden_size, 1)

    def forward(self, batch: Any) -> torch.Tensor:
        """Predictions, shape ``(B,)``."""
        return self.head(self.dropout(self.text(batch.input_ids, batch.attention_mask))).squeeze(-1)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.cfg.model_dump()}
