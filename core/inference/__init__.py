"""Running trained models over spectra and whole stores.

* :mod:`.predictor` — the :class:`~.predictor.Predictor` interface every family implements
  (batch in → catalog columns + named outputs; ``predict_spectrum`` for the app);
* :mod:`.runner` — :func:`~.runner.run_store`: any predictor over a store, in batches, on
  one process or sharded under torchrun, one atomic catalog write;
* :mod:`.vae`, :mod:`.emulator` — the two shipped families' predictors;
* :mod:`.prepare` — model-ready arrays (good pixels, χ² weights, labels), shared with training.
"""
