"""Executors: what runs a spec as a container's PID 1 or joins a running one. Our own (the process steps and the
exec stage) and the driver for OCI runtimes (runc, crun), with the channel they speak to the runner over."""
