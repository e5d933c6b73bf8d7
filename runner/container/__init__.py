"""A container's life: its record on disk (:mod:`runner.container.record`: data and PID 1's identity), and the verbs
that move it from state to state: create (with the run options it resolves, :mod:`runner.container.options`),
start, run, monitor, exec, commit, release, bundle, and lifecycle (which executor runs it; stop, kill). This room
owns the record; the executor and the isolation mechanisms below it never see one."""
