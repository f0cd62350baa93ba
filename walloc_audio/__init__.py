"""walloc-audio: WaLLoC (Wavelet Learned Lossy Compression) for stereo audio.

Public API::

    from walloc_audio import load_model, compress_file, decompress_file
    model = load_model("stereo-5x-linear")           # the default; see `walloc-audio models`
    compress_file("song.flac", "song.wlc", model, quality=5)
    decompress_file("song.wlc", "song.wav")
    z = model.runtime.analyze(x)                     # x: [C, T] float in [-1, 1] -> latents [L, T/N] (numpy)
    y = model.runtime.synthesize(z)                  # delayed by model.config.delay_samples

``model.codec`` is the same model as a torch module (training, learning on
latents); it is the only part that imports torch.
"""

from .errors import AudioError, BitstreamError, ModelError, OutputError, WallocError

__version__ = "0.1.0"

# Everything else loads on first use, so `import walloc_audio` (and the CLI's start-up) stays
# light: numpy comes with the first name that needs it, torch only with WallocCodec.
_LAZY = {
    "CodecConfig": "config", "DEFAULT_MODEL": "pretrained", "LoadedModel": "pretrained",
    "list_models": "pretrained", "load_model": "pretrained", "packet_filters": "wavelets",
    "PacketTransform": "wavelets", "WallocCodec": "model", "compress_file": "compress",
    "decompress_file": "compress",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'walloc_audio' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "AudioError", "BitstreamError", "ModelError", "OutputError", "WallocError",
    "CodecConfig", "WallocCodec", "DEFAULT_MODEL", "LoadedModel", "list_models", "load_model",
    "PacketTransform", "packet_filters", "compress_file", "decompress_file", "__version__",
]
