"""walloc-audio: WaLLoC (Wavelet Learned Lossy Compression) for stereo audio.

Public API::

    from walloc_audio import load_model, compress_file, decompress_file
    model = load_model("stereo-5x")                  # the default; see `walloc-audio models`
    compress_file("song.flac", "song.wlc", model, quality=5)
    decompress_file("song.wlc", "song.wav")
    z = model.runtime.analyze(x)                     # x: [C, T] float in [-1, 1] -> latents [L, T/N] (numpy)
    y = model.runtime.synthesize(z)                  # delayed by model.config.delay_samples

``model.codec`` is the same model as a torch module (training, learning on
latents); it is the only part that imports torch.
"""

from .config import CodecConfig
from .errors import AudioError, BitstreamError, ModelError, OutputError, WallocError
from .pretrained import DEFAULT_MODEL, LoadedModel, list_models, load_model
from .wavelets import packet_filters

__version__ = "0.1.0"


def __getattr__(name: str):
    """The torch-based names load on first use, so ``import walloc_audio`` stays light."""
    if name == "WallocCodec":
        from .model import WallocCodec

        return WallocCodec
    if name == "PacketTransform":
        from .wavelets import PacketTransform

        return PacketTransform
    if name in ("compress_file", "decompress_file"):
        from . import compress

        return getattr(compress, name)
    raise AttributeError(f"module 'walloc_audio' has no attribute {name!r}")


__all__ = [
    "AudioError", "BitstreamError", "ModelError", "OutputError", "WallocError",
    "CodecConfig", "WallocCodec", "DEFAULT_MODEL", "LoadedModel", "list_models", "load_model",
    "PacketTransform", "packet_filters", "compress_file", "decompress_file", "__version__",
]
