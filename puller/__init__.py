"""``puller``: fetch images from a registry into the Strata store."""
