"""Imported by a multiprocessing fork server as its first preload module: ties the fork
server's life to the process that started it (:mod:`segkit.system.lifeline`). Not for import
anywhere else: importing it is the action."""

from segkit.system.lifeline import recorded_parent, tie_to_parent

tie_to_parent(recorded_parent())
