"""Strata's layer library: references, digests, the store, manifests and configs, tar <-> diff dir.

It knows no CLI, no HTTP and no namespaces, so both tools (and tests) can use it without root or network.
"""
