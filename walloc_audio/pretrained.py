"""Model registry: name -> config + safetensors weights, checked by sha256.

A model is two files in a registry folder: ``NAME.json`` (config, sha256 of the
weights, description, measured figures) and ``NAME.safetensors`` (tensors
only: loading never executes code from a file), plus, for version-2 streams,
``NAME.v2.safetensors``: the forward-adaptive entropy model
(:mod:`walloc_audio.adaptive`), kept apart so that refitting it never changes
the weights' hash that version-1 files name. Its sha256 is in ``NAME.json``
(``v2.sha256``) and in every version-2 stream header. Folders searched, in order:
``$WALLOC_AUDIO_MODELS`` (``os.pathsep``-separated) then the models shipped in
the package.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_safetensors

from .adaptive import AdaptiveCoder
from .config import CodecConfig
from .entropy import ContextCoder, EntropyCoder, rebin_probabilities
from .errors import ModelError
from .runtime import RuntimeCodec, weight_shapes

PACKAGE_MODELS = Path(__file__).parent / "models"
DEFAULT_MODEL = "stereo-5x-linear"  # the best ViSQOL and PSNR at equal rate (docs/codec.md, 2026-12-03)
MAX_WEIGHTS_BYTES = 256 * 1024 * 1024
MIN_STEP_SCALE, MAX_STEP_SCALE = 0.125, 8.0
CONTEXT_KEYS = ("entropy.scales", "entropy.offsets", "entropy.thresholds")


@dataclass
class LoadedModel:
    """A codec ready to use: config, arrays, entropy coder and identity.

    The codec runtime (:attr:`runtime`, numpy) is what encoding, decoding and
    streaming run. :attr:`codec` is the same model as a torch module, for training
    and learning on latents; it is built on first use, so a process that only
    codes audio never imports torch.
    """

    name: str
    sha256: str
    config: CodecConfig
    weights: dict  # the model file's arrays by torch state-dict name (entropy tables removed)
    coder: EntropyCoder | ContextCoder
    info: dict
    step_scale: float = 1.0
    adaptive: AdaptiveCoder | None = None  # the version-2 entropy model, when the model has one
    adaptive_sha256: str = ""
    base: "LoadedModel | None" = field(default=None, repr=False)  # the model at step scale 1
    # Variants made by with_step_scale, kept on the base model: every file of a batch or
    # eval run at the same scale shares one runtime and one re-binned coder.
    _scaled: dict = field(default_factory=dict, repr=False, compare=False)
    _runtime: RuntimeCodec | None = field(default=None, repr=False, compare=False)
    _codec: object = field(default=None, repr=False, compare=False)

    @classmethod
    def from_codec(cls, name: str, sha256: str, codec, coder, info: dict, **kw) -> "LoadedModel":
        """Wrap a torch :class:`~walloc_audio.tools.model.WallocCodec` (training, tests): its arrays become the runtime's."""
        weights = {k: v.detach().cpu().numpy().copy() for k, v in codec.state_dict().items()}
        return cls(name, sha256, codec.config, weights, coder, info, _codec=codec, **kw)

    def num_parameters(self) -> int:
        return int(sum(v.size for v in self.weights.values()))

    @property
    def runtime(self) -> RuntimeCodec:
        if self._runtime is None:
            self._runtime = RuntimeCodec(self.config, self.weights, self.step_scale)
        return self._runtime

    @property
    def codec(self):
        """The torch model (imports torch on first use)."""
        if self._codec is None:
            import torch

            from walloc_audio.tools.model import WallocCodec

            codec = WallocCodec(self.config)
            codec.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.weights.items()}, strict=True)
            if self.step_scale != 1.0:
                with torch.no_grad():
                    codec.bottleneck.log_step.add_(math.log(self.step_scale))
            self._codec = codec.eval()
        return self._codec

    def with_step_scale(self, step_scale: float) -> "LoadedModel":
        """This model with its quantizer step multiplied by ``step_scale`` (the version-1 bitrate knob).

        Larger steps mean fewer kbps and more noise. The entropy model follows
        (static tables are re-binned, context scales divided); encoder and
        decoder derive the same coder from the model and ``step_scale``, which
        the stream header carries.
        """
        s = float(step_scale)
        if not (math.isfinite(s) and MIN_STEP_SCALE <= s <= MAX_STEP_SCALE):
            raise ModelError(f"step scale must be {MIN_STEP_SCALE}..{MAX_STEP_SCALE}, got {step_scale}")
        if s == self.step_scale:
            return self
        base = self.base or self
        if s == 1.0:
            return base
        if s in base._scaled:
            return base._scaled[s]
        if isinstance(base.coder, ContextCoder):
            coder = base.coder.scaled(s)
        else:
            coder = EntropyCoder(rebin_probabilities(base.coder.probabilities, s))
        base._scaled[s] = replace(base, coder=coder, step_scale=s, base=base, _scaled={}, _runtime=None, _codec=None)
        return base._scaled[s]


def search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("WALLOC_AUDIO_MODELS", "").split(os.pathsep) if p]
    return extra + [PACKAGE_MODELS]


def list_models() -> list[dict]:
    """Metadata of every installed model (first folder wins on duplicate names)."""
    seen: dict[str, dict] = {}
    for folder in search_path():
        for meta in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                info = json.loads(meta.read_text())
                info["path"] = str(meta.with_suffix(".safetensors"))
                seen.setdefault(info["name"], info)
            except (OSError, ValueError, KeyError):
                continue
    return list(seen.values())


SEPARATORS = "separators"  # subfolder of a registry folder holding separator files (separation.separator)
MAX_SAFETENSORS_HEADER = 1 << 20


def safetensors_metadata(path: str | os.PathLike) -> dict:
    """The ``__metadata__`` strings of a safetensors file, read from its header alone (bounded, no torch)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 0 < n <= MAX_SAFETENSORS_HEADER:
            raise ValueError(f"header size {n} out of bounds")
        header = json.loads(f.read(n))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def separator_folders() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("WALLOC_AUDIO_SEPARATORS", "").split(os.pathsep) if p]
    return extra + [folder / SEPARATORS for folder in search_path()]


def list_separators() -> list[dict]:
    """Installed separators: name, path, the codec they work on, and what their file says of them
    (``extra``: its JSON object, ``{}`` where the file holds something else)."""
    seen: dict[str, dict] = {}
    for folder in separator_folders():
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            try:
                meta = safetensors_metadata(path)
                extra = json.loads(meta.get("extra", "{}"))
            except (OSError, ValueError):
                continue
            extra = extra if isinstance(extra, dict) else {}
            seen.setdefault(path.stem, {"name": path.stem, "path": str(path), "codec": meta.get("codec"),
                                        "codec_sha256": meta.get("codec_sha256"), "extra": extra,
                                        "bytes": path.stat().st_size})
    return list(seen.values())


def _find(name: str, folder: Path | None = None) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ModelError(f"invalid model name {name!r}")
    for folder in [folder] if folder is not None else search_path():
        if (folder / f"{name}.json").is_file():
            return folder / f"{name}.json"
    known = ", ".join(sorted(m["name"] for m in list_models())) or "none"
    raise ModelError(f"model {name!r} is not installed (installed: {known})")


def load_model(name: str = DEFAULT_MODEL, expected_sha256: str | None = None,
               folder: Path | None = None) -> LoadedModel:
    """Load a registered model (from ``folder`` only, if given); verify its weights against the
    registry (and the caller's hash)."""
    meta_path = _find(name, folder)
    try:
        info = json.loads(meta_path.read_text())
        config = CodecConfig.from_dict(info["config"])
        sha = info["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"model {name!r}: unreadable metadata {meta_path.name} ({exc})") from None
    if expected_sha256 is not None and expected_sha256 != sha:
        raise ModelError(
            f"stream was made by model {name!r} with weights sha256 {expected_sha256[:16]}..., "
            f"but the installed {name!r} has {sha[:16]}... (install the matching model)"
        )
    weights_path = meta_path.with_suffix(".safetensors")
    try:
        if weights_path.stat().st_size > MAX_WEIGHTS_BYTES:
            raise ModelError(f"model {name!r}: weights file too large")
        data = weights_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"model {name!r}: cannot read weights ({exc.strerror})") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha:
        raise ModelError(f"model {name!r}: weights sha256 {actual[:16]}... does not match the registry {sha[:16]}...")
    try:
        tensors = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error type on a malformed file
        raise ModelError(f"model {name!r}: weights file is not valid safetensors ({exc})") from None
    try:
        if config.entropy == "context":
            scales, offsets, thresholds = (tensors.pop(k) for k in CONTEXT_KEYS)
            coder = ContextCoder(scales, offsets, thresholds, 2 ** (config.latent_bits - 1) - 1)
        else:
            coder = EntropyCoder(tensors.pop("entropy.probabilities"))
    except (KeyError, ValueError) as exc:
        raise ModelError(f"model {name!r}: weights carry no usable entropy model ({exc})") from None
    expected = weight_shapes(config)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        wrong = sorted(set(got) ^ set(expected)) or sorted(k for k in got if got[k] != expected[k])
        raise ModelError(f"model {name!r}: weights do not match its config (e.g. {wrong[0]})")
    adaptive, adaptive_sha = _load_adaptive(name, meta_path, info, config)
    return LoadedModel(name, sha, config, tensors, coder, info, adaptive=adaptive, adaptive_sha256=adaptive_sha)


V2_KEYS = ("scales", "offsets", "side", "delta", "knee", "max_symbol", "reference_level")


def _load_adaptive(name: str, meta_path: Path, info: dict, config: CodecConfig) -> tuple[AdaptiveCoder | None, str]:
    """The version-2 entropy model named in ``info["v2"]``, checked by sha256 (None when absent)."""
    v2 = info.get("v2")
    if not v2:
        return None, ""
    from safetensors.numpy import load as load_numpy

    path = meta_path.with_name(f"{name}.v2.safetensors")
    try:
        if path.stat().st_size > MAX_WEIGHTS_BYTES:
            raise ModelError(f"model {name!r}: v2 entropy model too large")
        data = path.read_bytes()
        expected = v2["sha256"]
    except OSError as exc:
        raise ModelError(f"model {name!r}: cannot read its v2 entropy model ({exc.strerror})") from None
    except (KeyError, TypeError):
        raise ModelError(f"model {name!r}: metadata names a v2 entropy model without its sha256") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelError(f"model {name!r}: v2 entropy model sha256 {actual[:16]}... does not match {expected[:16]}...")
    try:
        t = load_numpy(data)
        coder = AdaptiveCoder(t["scales"], t["offsets"], t["side"], delta=float(t["delta"][0]),
                              knee=float(t["knee"][0]), max_symbol=int(t["max_symbol"][0]),
                              reference_level=float(t["reference_level"][0]),
                              deadzone=float(t["deadzone"][0]) if "deadzone" in t else 0.0)
    except (KeyError, ValueError, IndexError) as exc:
        raise ModelError(f"model {name!r}: unusable v2 entropy model ({exc})") from None
    if coder.channels != config.latent_dim or coder.max_symbol != 2 ** (config.latent_bits - 1) - 1:
        raise ModelError(f"model {name!r}: v2 entropy model does not match its config")
    return coder, actual


def save_adaptive(folder: Path, name: str, coder: AdaptiveCoder, extra: dict | None = None) -> dict:
    """Write ``NAME.v2.safetensors`` and record it (sha256, ``extra``) under ``v2`` in ``NAME.json``."""
    from safetensors.numpy import save as save_numpy

    tensors = {"scales": coder.scales, "offsets": coder.offsets, "side": coder.side,
               "delta": np.array([coder.delta]), "knee": np.array([coder.knee]),
               "max_symbol": np.array([coder.max_symbol], dtype=np.int64),
               "reference_level": np.array([coder.reference_level])}
    if coder.deadzone:  # absent: rounding to nearest (every table fitted before the dead zone)
        tensors["deadzone"] = np.array([coder.deadzone])
    data = save_numpy({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    meta_path = folder / f"{name}.json"
    info = json.loads(meta_path.read_text())
    info["v2"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), **(extra or {})}
    (folder / f"{name}.v2.safetensors").write_bytes(data)
    meta_path.write_text(json.dumps(info, indent=2) + "\n")
    return info


def save_model(folder: Path, name: str, codec, probabilities: np.ndarray | None = None,
               description: str = "", extra: dict | None = None,
               context: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict:
    """Write ``NAME.safetensors`` + ``NAME.json`` into ``folder``; returns the metadata.

    The entropy model goes with the weights: ``probabilities`` (static tables)
    for ``config.entropy == "static"``, ``context = (scales, offsets,
    thresholds)`` for ``"context"``.
    """
    import torch  # training tooling: the model to save is a torch module
    from safetensors.torch import save as save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in codec.state_dict().items()}
    if codec.config.entropy == "context":
        assert context is not None, "a context-coded model needs its context tables"
        for key, arr, dt in zip(CONTEXT_KEYS, context, (np.float32, np.float32, np.float64)):
            tensors[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=dt))
    else:
        assert probabilities is not None, "a statically coded model needs its probability tables"
        tensors["entropy.probabilities"] = torch.from_numpy(np.ascontiguousarray(probabilities, dtype=np.float32))
    data = save_safetensors(tensors)
    cfg = codec.config
    info = {
        "name": name,
        "description": description,
        "config": cfg.to_dict(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "dimension_reduction": round(cfg.dimension_reduction, 3),
        "latency_samples": cfg.latency_samples,
        "latency_ms": round(cfg.latency_ms, 2),
        "parameters": codec.num_parameters(),
        "weights_bytes": len(data),
        **(extra or {}),
    }
    (folder / f"{name}.safetensors").write_bytes(data)
    (folder / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
