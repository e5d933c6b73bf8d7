"""``puller`` verbs that move images: each a composition of shared/transfer sources and sinks."""
