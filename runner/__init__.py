"""``runner``: run images from the Strata store in new namespaces, offline."""
