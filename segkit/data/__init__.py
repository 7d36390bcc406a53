"""Data: reading and checking image and mask files (:mod:`.reading`), the epoch order and
sharding rule every loader follows (:mod:`.sampling`), which layout a ``--data`` folder is
in (:mod:`.layouts`), what encoding its masks are in and the fix when a dataset reads them
otherwise (:mod:`.encoding`), the checks a run makes before its first step
(:mod:`.prepare`), and ``segkit data check`` (:mod:`.check`). Dataset layouts themselves
are plugins (``segkit.datasets``)."""
