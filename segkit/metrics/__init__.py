"""Segmentation metrics accumulated on the device: binary (:mod:`.binary`) and K-class
(:mod:`.multiclass`)."""
