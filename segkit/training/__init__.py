"""Training: the engine (:mod:`.engine`, ``segkit.train``) and what it is made of: the
loops, checkpoints, the run folder, precision, distributed training, early stopping, EMA,
progress lines, and the learning-rate sweep."""
