"""Isolation mechanisms, each one kernel feature: the root filesystem, cgroups and the device allow list, the
freezer, seccomp, capabilities and other privileges, users, and the terminal. They take values, not records."""
