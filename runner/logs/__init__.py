"""A container's output on disk: the writer (json-file and local drivers, rotation) the executors feed, and the
reader ``runner logs`` uses."""
