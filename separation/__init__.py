"""Compressed-domain source separation on WaLLoC latents.

``data`` (MUSDB access, remix datasets), ``cache`` (latent caches), ``models``
(Asteroid maskers on latents; the waveform baseline), ``train`` (Lightning via
Asteroid's System), ``evaluate`` (museval, MUSDB aggregation), ``stems`` (a
MUSDB-style set built from General MIDI songs), ``separator`` and
``inference`` (``walloc-audio separate``: shipped separators, run in numpy).
Recipes: ``recipes/musdb18``. Importing the package itself needs no torch.
"""

STEMS = ("drums", "bass", "other", "vocals")  # musdb's stem_ids 1..4
