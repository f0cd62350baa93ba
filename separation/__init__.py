"""Compressed-domain source separation on WaLLoC latents.

``data`` (MUSDB access, remix datasets), ``cache`` (latent caches), ``models``
(Asteroid maskers on latents; the waveform baseline), ``train`` (Lightning via
Asteroid's System), ``evaluate`` (museval, MUSDB aggregation), ``stems`` (a
MUSDB-style set built from General MIDI songs). Recipes: ``recipes/musdb18``.
"""
