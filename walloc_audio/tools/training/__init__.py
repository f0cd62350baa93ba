"""``walloc-audio train``, split along its seams.

* :mod:`.config` -- :class:`.config.TrainConfig` and its portable form;
* :mod:`.data` -- tracks, stems, random crops and remixes;
* :mod:`.losses` -- normalised MSE, multi-resolution STFT, the rate term;
* :mod:`.module` -- the Lightning module;
* :mod:`.export` -- entropy fits, measurement through the real bitstream, registry files;
* :mod:`.run` -- the driver (:func:`.run.run`);
* :mod:`.linear_fit`, :mod:`.fit_adaptive` -- the PCA codec and the version-2 entropy model.
"""
