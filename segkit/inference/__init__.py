"""Inference: from a checkpoint to predictions and scores.

- :mod:`.trained`: the one way from a checkpoint to a model ready to run
  (:func:`~segkit.inference.trained.open_trained` -> ``Trained``)
- :mod:`.predictor`: ``segkit.Predictor``, probabilities of images of any size
  (resized, whole or tiled, with test-time flips); :mod:`.tiling` and :mod:`.forward`
  are its machinery, :mod:`.native` evaluation at native resolution
- :mod:`.predict`, :mod:`.evaluate`, :mod:`.export`: ``segkit predict``, ``evaluate`` and
  ``export`` as library functions, their options in :mod:`.options`
"""
