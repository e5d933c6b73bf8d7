"""Moving images between places: the image value, sources, sinks and copy (see model.py)."""
