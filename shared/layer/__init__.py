"""Tar layers <-> overlay diff directories."""
