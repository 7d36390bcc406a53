"""``python -m segkit`` is the ``segkit`` command (:mod:`segkit.command`)."""

from segkit.command import main

raise SystemExit(main())
