"""Tooling around the codec runtime: everything here needs torch or other extras.

The runtime (``walloc_audio/*.py``: analysis by lifting, quantization, entropy coding,
the container, the numpy decoder, the CLI's codec commands) imports nothing from here.
This folder holds what builds, checks and measures it:

* :mod:`.model`, :mod:`.framefir`, :mod:`.bottleneck`, :mod:`.decoder` -- the torch twin
  of the codec (same model files, differentiable), for training and learning on latents;
* :mod:`.training` -- ``walloc-audio train`` (config, data, losses, Lightning module, export)
  and the PCA / version-2 entropy model fits;
* :mod:`.evaluation` -- ``walloc-audio eval`` (metrics, tracks, baselines, report, run),
  the reference WaLLoC scheme and ViSQOL;
* :mod:`.benchmark`, :mod:`.startup_bench` -- speed, start-up and memory figures.

Install with ``pip install 'walloc-audio[train]'``; a lean install that reaches for this
folder gets one line naming the extra (:mod:`walloc_audio.cli`).
"""
