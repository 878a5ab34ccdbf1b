"""A Hugging Face text encoder *inside* a model, fine-tuned with it (the papers' end-to-end setting).

The frozen-text models (``text``, ``matmmfuse_frozen``, ``crysmmnet``) read vectors cached by the
embedding stage. The fine-tuned ones (``matmmfuse``, ``text_finetune``) read token ids
(:func:`matfuse.data.read_tokens`: the robocrys texts tokenised by the same function as the
embedding stage, :func:`matfuse.embed.text.tokenize`) and run this module in the training loop.

Constructor settings (:class:`TextEncoderConfig`) are primitives, so a checkpoint rebuilds it:
``encoder`` names the checkpoint as in ``embeddings.<name>.model`` (``packaged:minilm``, a local
folder, a cached hub name; also the tokenizer used at prediction time), ``hf_config`` is the
transformers config of its architecture (filled from the checkpoint when built for training) and
``weights`` is where the starting weights come from — dropped when a matfuse checkpoint is loaded
(registry ``weight_files``: its state dict holds the fine-tuned encoder), so loading never needs
the original files.

Pooling of the last hidden states: ``cls`` (first token), ``mean`` (mean over the real tokens,
padding masked), ``mean_unmasked`` (the MatMMFuse authors': mean over *all* positions of a batch
padded to its longest text, so padding counts — and a text's vector depends on its batch) and
``pooler`` (BERT's pooler, tanh(W h_cls), as in ``BertForSequenceClassification``).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

Pooling = Literal["cls", "mean", "mean_unmasked", "pooler"]


class TextEncoderConfig(BaseModel):
    """Constructor settings of :class:`HFTextEncoder` (stored in checkpoints)."""

    model_config = ConfigDict(extra="forbid")

    encoder: str = Field(description="Encoder name as in `embeddings.<name>.model` (tokenizer at prediction time).")
    max_length: int = Field(512, ge=8, description="Tokens per text (the token ids are cut to this).")
    pooling: Pooling = "mean"
    hf_config: dict[str, Any] | None = Field(None, description="transformers config of the architecture.")
    weights: str | None = Field(None, description="Where the starting weights are read (None: from the state dict).")
    fine_tune: bool = Field(True, description="Train the encoder's weights (False: frozen, computed on the fly).")


def resolve_path(spec: str) -> Any:
    """The local checkpoint folder of an encoder spec (offline; see :mod:`matfuse.embed.encoder`)."""
    from matfuse.embed.encoder import resolve_encoder

    return resolve_encoder(spec).path


def load_tokenizer(spec: str) -> Any:
    """The tokenizer of an encoder spec, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_path(spec)), local_files_only=True)


class HFTextEncoder(nn.Module):
    """``(input_ids, attention_mask) -> (B, hidden)`` pooled text vectors, trainable."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoConfig, AutoModel

        cfg = TextEncoderConfig(**kwargs)
        if cfg.weights is not None:
            path = str(resolve_path(cfg.weights))
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
            cfg = cfg.model_copy(update={"hf_config": self.model.config.to_dict()})
        elif cfg.hf_config is not None:
            hf = dict(cfg.hf_config)
            self.model = AutoModel.from_config(AutoConfig.for_model(**hf))
        else:
            raise ValueError("HFTextEncoder needs `weights` (a checkpoint to start from) or `hf_config`")
        if cfg.pooling == "pooler" and getattr(self.model, "pooler", None) is None:
            raise ValueError(f"encoder {cfg.encoder!r} has no pooler layer: use pooling cls, mean or mean_unmasked")
        self.cfg = cfg
        if not cfg.fine_tune:
            for p in self.model.parameters():
                p.requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Trim the batch to its longest text (ids are stored padded to the data set's longest).
        length = int(attention_mask.sum(dim=1).max().item()) if attention_mask.numel() else 1
        ids = input_ids[:, : max(length, 1)].long()
        mask = attention_mask[:, : max(length, 1)].long()
        if not self.cfg.fine_tune:
            self.model.eval()
        with torch.set_grad_enabled(self.cfg.fine_tune and torch.is_grad_enabled()):
            out = self.model(input_ids=ids, attention_mask=mask)
        hidden = out.last_hidden_state
        if self.cfg.pooling == "cls":
            return hidden[:, 0]
        if self.cfg.pooling == "pooler":
            return out.pooler_output
        if self.cfg.pooling == "mean_unmasked":
            return hidden.mean(dim=1)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    def to_config(self) -> dict[str, Any]:
        return self.cfg.model_dump()
