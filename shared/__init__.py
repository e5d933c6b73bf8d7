"""What both tools share: references, digests, manifests and configs (``image``), the store (``store/``), tar <->
diff dir (``layer/``), moving images between places (``transfer/``), templates and tables, and errors.

Everything here but ``cli.py`` knows no command line, no HTTP and no namespaces, so both tools (and tests) use it
without root or network; ``cli.py`` is the part of the two command lines they share (typer, the error
convention, the store option).
"""
