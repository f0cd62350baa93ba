"""``walloc-audio eval``, split along its seams.

* :mod:`.metrics` -- per-track distances (signal figures from :mod:`walloc_audio.metrics`,
  MR-STFT and log-mel with torch);
* :mod:`.tracks` -- decoding tracks once to float WAVs, delay alignment;
* :mod:`.baselines` -- the codec's real file path, Opus, the reference scheme, FLAC;
* :mod:`.report` -- aggregation, comparisons at equal kbps, tables, plots, JSON;
* :mod:`.run` -- the orchestration (:func:`.run.evaluate_paths`);
* :mod:`.reference_scheme`, :mod:`.visqol` -- the reference WaLLoC coder and ViSQOL v3.
"""
