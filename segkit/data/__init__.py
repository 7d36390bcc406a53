"""Data: reading and checking image and mask files (:mod:`.reading`), the epoch order and
sharding rule every loader follows (:mod:`.sampling`), and ``segkit data check``
(:mod:`.check`). Dataset layouts themselves are plugins (``segkit.datasets``)."""
