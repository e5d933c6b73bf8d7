"""A registry client on requests: the distribution API as Docker Hub and the reference registry speak it."""
