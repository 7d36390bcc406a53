"""Process and file guarantees: output files left whole whatever kills the process
(:mod:`.files`), helper processes that die with their parent (:mod:`.lifeline`), and the
main-guard check for scripts that start worker processes (:mod:`.main_guard`)."""
