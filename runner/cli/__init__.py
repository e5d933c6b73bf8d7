"""The ``runner`` command line: the typer app (:mod:`runner.cli.main`) and what only a user at a terminal needs,
the run options' declarations (:mod:`runner.cli.options`), listings (``ps``), ``inspect`` and the ``network``
verbs. It parses and prints; the work is in the other rooms."""
