"""Executors: what runs a spec as a container's PID 1 or joins a running one, and knows no container record. The
protocol every executor implements (protocol: create -> Started, kill, release), our own (own: PID 1; process: the
last steps of every container process; stage: exec's stage) and the driver for OCI runtimes (runtime: runc, crun),
the one supervise loop that attends what they start (supervise), and the channel they speak to the runner over."""
