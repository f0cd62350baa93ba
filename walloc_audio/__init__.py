"""walloc-audio: WaLLoC (Wavelet Learned Lossy Compression) for stereo audio.

Public API::

    from walloc_audio import load_model, compress_file, decompress_file
    model = load_model("stereo-5x")            # the default; see `walloc-audio models`
    symbols = model.codec.encode(x)        # x: [B, C, T] float in [-1, 1]
    y = model.codec.decode(symbols)        # delayed by model.config.delay_samples
"""

from .errors import AudioError, BitstreamError, ModelError, OutputError, WallocError
from .model import CodecConfig, WallocCodec
from .pretrained import DEFAULT_MODEL, LoadedModel, list_models, load_model
from .wavelets import PacketTransform, packet_filters

__version__ = "0.1.0"

__all__ = [
    "AudioError", "BitstreamError", "ModelError", "OutputError", "WallocError",
    "CodecConfig", "WallocCodec", "DEFAULT_MODEL", "LoadedModel", "list_models", "load_model",
    "PacketTransform", "packet_filters", "__version__",
]
