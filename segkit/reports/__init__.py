"""Reports: the run folder's figures, ``segkit compare``, ``segkit study``, ``segkit
preview``, ``segkit info`` and TensorBoard logging."""
