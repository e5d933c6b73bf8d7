"""The verbs of a Docker user's day beyond a container's life (one file per verb, as crun's): each composes the
record and the mechanisms of :mod:`runner.container` and below, and is called by a thin command in
:mod:`runner.cli`. Nothing below this room imports it."""
