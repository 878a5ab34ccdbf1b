"""FlowLLM's base distribution: a GPT-2-style causal LM over crystal text, trained from scratch.

:class:`CrystalLM` is a plain ``nn.Module`` around ``transformers.GPT2LMHeadModel`` built from a
``GPT2Config`` (no pretrained weights: no PyPI wheel ships a small causal LM to fine-tune; a
LoRA-adapted pretrained LLM as in the paper is the GPU path). Its constructor arguments are
primitives, so checkpoints go through the training kit (:func:`matfuse.kit.save_checkpoint`,
``torch.load(weights_only=True)``).

* :func:`train_lm`: next-token cross-entropy over the text of :mod:`matfuse.generate.text`, a
  fresh random translation of every training crystal each epoch, a share of the sequences
  carrying the formula prompt (so one model samples unconditionally and formula-conditioned);
  selection on the validation loss (per token) with the kit's loop.
* :func:`sample_ids`: temperature and nucleus (top-p) sampling with the KV cache, prompts of
  equal length batched together.
* :func:`sample_crystals`: samples parsed to structures, each with its parse-failure reason
  where there is none; :func:`parse_rate`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from pymatgen.core import Structure
from torch import nn

from matfuse import kit
from matfuse.generate.text import (
    ELEMENTS,
    CrystalTokenizer,
    ParseFailure,
    TextFormat,
    cell_formula,
    crystal_to_text,
    parse_crystal,
    reduce_cell,
)

log = logging.getLogger(__name__)


class CrystalLM(nn.Module):
    """GPT-2 (``transformers``) from scratch over :class:`CrystalTokenizer` ids."""

    name = "flowllm_lm"

    def __init__(
        self,
        vocab_size: int | None = None,
        n_positions: int = 512,
        n_embd: int = 128,
        n_layer: int = 4,
        n_head: int = 4,
        dropout: float = 0.1,
        text_format: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        tok = CrystalTokenizer()
        vocab_size = tok.vocab_size if vocab_size is None else vocab_size
        if vocab_size != tok.vocab_size:
            raise ValueError(f"vocab_size {vocab_size} != the tokenizer's {tok.vocab_size} (another code version?)")
        self.kwargs: dict[str, Any] = dict(
            vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
            dropout=dropout, text_format=dict(text_format or TextFormat().to_dict()),
        )
        self.text_format = TextFormat(**self.kwargs["text_format"])
        config = GPT2Config(
            vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
            resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
            bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
        )
        self.gpt = GPT2LMHeadModel(config)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.gpt(input_ids=input_ids, attention_mask=attention_mask).logits

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --------------------------------------------------------------------------- training
@dataclass
class LMSettings:
    """How :func:`train_lm` trains (the typed config section maps onto this)."""

    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_positions: int = 512
    dropout: float = 0.1
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05
    patience: int = 100
    cond_fraction: float = 0.5
    augment: bool = True
    length_decimals: int = 1
    angle_decimals: int = 0
    coord_decimals: int = 2
    max_sites: int = 20
    device: str = "cpu"

    @property
    def text_format(self) -> TextFormat:
        return TextFormat(self.length_decimals, self.angle_decimals, self.coord_decimals, self.max_sites)


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[k, : len(s)] = 1
    return ids, mask


def encode_structures(
    structures: Sequence[Structure], tok: CrystalTokenizer, fmt: TextFormat, rng: np.random.Generator,
    translate: bool, cond_fraction: float, max_len: int,
) -> list[list[int]]:
    """Token ids of reduced ``structures`` (a share with the formula prompt); too-long ones are cut."""
    out = []
    for s in structures:
        formula = cell_formula(s) if rng.random() < cond_fraction else None
        ids = tok.encode(crystal_to_text(s, fmt, rng=rng, translate=translate, reduce=False), formula)
        out.append(ids[:max_len])
    return out


def length_buckets(lengths: Sequence[int], batch_size: int, rng: np.random.Generator, pool: int = 16) -> list[np.ndarray]:
    """Random batches of similar lengths (less padding): a random order cut into pools of
    ``pool`` batches, each pool sorted by length and cut into batches, the batches shuffled."""
    order = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    batches = []
    step = batch_size * pool
    for k in range(0, len(order), step):
        part = order[k: k + step]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[j: j + batch_size] for j in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def lm_loss(model: CrystalLM, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over the real (unpadded) target tokens, and their count."""
    logits = model(ids, mask)[:, :-1]
    target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    n = int((target != -100).sum())
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
    return loss, n


def train_lm(
    train: Sequence[Structure], val: Sequence[Structure], settings: LMSettings, seed: int = 0,
) -> tuple[CrystalLM, dict[str, Any]]:
    """Train a :class:`CrystalLM` on ``train`` (selection on ``val`` loss); (model, summary)."""
    kit.seed_everything(seed)
    device = kit.resolve_device(settings.device)
    tok = CrystalTokenizer()
    fmt = settings.text_format
    train = [reduce_cell(s) for s in train]
    val = [reduce_cell(s) for s in val]
    model = CrystalLM(tok.vocab_size, settings.n_positions, settings.n_embd, settings.n_layer, settings.n_head,
                      settings.dropout, fmt.to_dict()).to(device)
    rng = np.random.default_rng(seed)
    val_ids = encode_structures(val, tok, fmt, np.random.default_rng(seed + 1), False, settings.cond_fraction,
                                settings.n_positions)
    n_batches = math.ceil(len(train) / settings.batch_size)
    opt = kit.make_optimizer(model.parameters(), "adamw", settings.lr, settings.weight_decay)
    sched = kit.lr_schedule(opt, "cosine", n_batches * settings.epochs, warmup=settings.warmup)
    tokens_seen = {"n": 0}

    def batches():
        ids = encode_structures(train, tok, fmt, rng, settings.augment, settings.cond_fraction, settings.n_positions)
        for chunk in length_buckets([len(x) for x in ids], settings.batch_size, rng):
            yield _pad([ids[i] for i in chunk], tok.pad_id)

    def loss_of(batch):
        ids, mask = (t.to(device) for t in batch)
        loss, n = lm_loss(model, ids, mask)
        tokens_seen["n"] += n
        return loss, n

    def validate() -> float:
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for k in range(0, len(val_ids), settings.batch_size):
                ids, mask = (t.to(device) for t in _pad(val_ids[k: k + settings.batch_size], tok.pad_id))
                loss, n = lm_loss(model, ids, mask)
                total += float(loss) * n
                count += n
        return total / max(count, 1)

    t0 = time.perf_counter()
    result = kit.fit(model, opt, epochs=settings.epochs, patience=settings.patience, batches=batches,
                     loss_of=loss_of, validate=validate, desc="flowllm_lm", scheduler_step=sched)
    seconds = time.perf_counter() - t0
    summary = {
        "n_parameters": model.n_parameters(), "n_train": len(train), "n_val": len(val),
        "best_epoch": result.best_epoch, "best_val_loss": result.best_val_mae, "epochs_run": result.epochs_run,
        "train_seconds": result.train_seconds, "seconds": seconds, "train_tokens": tokens_seen["n"],
        "tokens_per_second": tokens_seen["n"] / max(result.train_seconds, 1e-9),
        "history": [{"epoch": h["epoch"], "train_loss": h["train_loss"], "val_loss": h["val_mae"],
                     "seconds": h["seconds"]} for h in result.history],
    }
    model.eval()
    return model, summary


# --------------------------------------------------------------------------- sampling
def _top_p_sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row from ``softmax(logits / temperature)`` restricted to the top-p nucleus."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        cum = sorted_p.cumsum(-1)
        drop = cum - sorted_p > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _cache_keyword() -> str:
    import inspect

    from transformers import GPT2LMHeadModel

    return "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


#: transformers 5 calls the KV cache ``cache``, 4.x ``past_key_values``.
_CACHE_KW = _cache_keyword()


def _cache_of(res: Any) -> Any:
    cache = getattr(res, "cache", None)
    return cache if cache is not None else res.past_key_values


@torch.no_grad()
def sample_ids(
    model: CrystalLM,
    prompts: Sequence[Sequence[int]],
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    max_length: int | None = None,
    seed: int = 0,
    species: Sequence[dict[str, int] | None] | None = None,
) -> list[list[int]]:
    """Complete every prompt (token ids) until <eos> or ``max_length`` tokens; ids incl. the prompt.

    Autoregressive with the KV cache: the prompt is read once, then one token per step. Prompts
    of equal length share a batch (no padding inside a prompt).

    ``species`` (one element -> count dict per prompt, or None): constrained decoding — an element
    token is allowed only while that element has atoms left, <eos> only when none are left, and a
    newline after the last atom's line ends the crystal (so a parsed sample has exactly these species).
    """
    tok = CrystalTokenizer()
    element_ids = torch.tensor([tok.index[e] for e in ELEMENTS], dtype=torch.long)
    newline_id = tok.index["\n"]
    model.eval()
    device = next(model.parameters()).device
    max_length = min(max_length or model.kwargs["n_positions"], model.kwargs["n_positions"])
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: list[list[int] | None] = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for k, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(k)
    for length, members in sorted(by_len.items()):
        for b in range(0, len(members), batch_size):
            idx = members[b: b + batch_size]
            ids = torch.tensor([list(prompts[i]) for i in idx], dtype=torch.long, device=device)
            mask = torch.ones_like(ids)
            res = model.gpt(input_ids=ids, attention_mask=mask, use_cache=True)
            past, logits = _cache_of(res), res.logits[:, -1]
            seqs = ids.cpu()
            done = torch.zeros(len(idx), dtype=torch.bool)
            left = None
            if species is not None:
                left = [None if species[i] is None else {tok.index[e]: int(n) for e, n in species[i].items()} for i in idx]
                newlines = [0] * len(idx)
            for _ in range(max_length - length):
                logits = logits.cpu()
                if left is not None:
                    logits = logits.clone()
                    for row, rem in enumerate(left):
                        if rem is None or bool(done[row]):
                            continue
                        ban = torch.zeros(len(tok.tokens), dtype=torch.bool)
                        ban[element_ids] = True
                        ok = [t for t, n in rem.items() if n > 0]
                        ban[ok] = False
                        if ok:
                            ban[tok.eos_id] = True
                        logits[row, ban] = -float("inf")
                nxt = _top_p_sample(logits, temperature, top_p, gen)
                if left is not None:
                    for row, rem in enumerate(left):
                        t = int(nxt[row])
                        if rem is not None and not bool(done[row]):
                            if t in rem:
                                rem[t] -= 1
                            elif t == newline_id:
                                if newlines[row] >= 2 and not any(n > 0 for n in rem.values()):
                                    nxt[row] = tok.eos_id  # the line of the last atom ends the crystal
                                newlines[row] += 1
                nxt = torch.where(done, torch.full_like(nxt, tok.pad_id), nxt)
                seqs = torch.cat([seqs, nxt[:, None]], dim=1)
                done |= nxt == tok.eos_id
                if bool(done.all()):
                    break
                mask = torch.ones((len(idx), seqs.shape[1]), dtype=torch.long, device=device)
                res = model.gpt(input_ids=nxt[:, None].to(device), attention_mask=mask, use_cache=True,
                                **{_CACHE_KW: past})
                past, logits = _cache_of(res), res.logits[:, -1]
            for row, i in enumerate(idx):
                out[i] = seqs[row].tolist()
    return [o for o in out if o is not None]


@dataclass
class Sample:
    """One generated crystal: its text, the structure or the failure, the prompt's formula."""

    text: str
    structure: Structure | None
    error: str | None
    formula: list[tuple[str, int]] | None = None
    n_tokens: int = 0


def decode_samples(ids: Sequence[Sequence[int]], fmt: TextFormat, conditioned: bool = False) -> list[Sample]:
    """Parse token ids to :class:`Sample` s (a conditioned sample must match its formula prompt)."""
    tok = CrystalTokenizer()
    out = []
    for seq in ids:
        text, formula, ended = tok.decode(seq)
        seq = list(seq)
        n = next((k + 1 for k, i in enumerate(seq) if i in (tok.eos_id, tok.pad_id)), len(seq))
        if n and seq[n - 1] == tok.pad_id:
            n -= 1
        seq = seq[:n]  # the sample's own tokens (a batch pads rows that ended early)
        res = parse_crystal(text, fmt, formula=formula if conditioned else None, ended=ended)
        if isinstance(res, ParseFailure):
            out.append(Sample(text, None, str(res), formula, len(seq)))
        else:
            out.append(Sample(text, res, None, formula, len(seq)))
    return out


def sample_crystals(
    model: CrystalLM,
    n: int | None = None,
    formulas: Sequence[Sequence[tuple[str, int]]] | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    constrain: bool = False,
) -> list[Sample]:
    """``n`` unconditional samples, or one per formula of ``formulas`` (formula-conditioned;
    ``constrain``: constrained decoding to exactly the formula's species, see :func:`sample_ids`)."""
    tok = CrystalTokenizer()
    if formulas is not None:
        prompts = [tok.prompt(list(f)) for f in formulas]
    elif n is not None:
        prompts = [tok.prompt(None) for _ in range(n)]
    else:
        raise ValueError("give n (unconditional) or formulas (conditioned)")
    species = [dict(f) for f in formulas] if constrain and formulas is not None else None
    ids = sample_ids(model, prompts, temperature, top_p, batch_size, seed=seed, species=species)
    return decode_samples(ids, model.text_format, conditioned=formulas is not None)


def parse_rate(samples: Sequence[Sample]) -> float:
    """Share of samples that parsed to a structure."""
    return sum(s.structure is not None for s in samples) / max(len(samples), 1)
