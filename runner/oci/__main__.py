"""``python -m runner.oci``: runner-oci (scripts/runner-oci runs the checkout's this way)."""

from runner.oci.main import entry

entry()
