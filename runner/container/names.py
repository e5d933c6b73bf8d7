"""Names for containers created without ``--name``: Docker's habit, ``adjective_surname`` (``brave_lovelace``), so
that ``ps`` shows something a person can say and type. The lists are our own: adjectives, and the surnames of
scientists and engineers whose work the machine under a container rests on. Chosen by :func:`generate`, unique among
the names ``taken`` (the caller holds the store's lock while it reads them and records the new one).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection

ADJECTIVES = (
    "able", "agile", "amazing", "ardent", "astute", "awesome", "bold", "brave", "bright", "brisk", "calm", "careful",
    "charming", "cheerful", "clever", "cool", "curious", "daring", "dazzling", "deft", "devoted", "diligent",
    "eager", "earnest", "elated", "elegant", "epic", "fair", "fearless", "fervent", "festive", "fond", "frank",
    "friendly", "gallant", "gentle", "gifted", "glad", "graceful", "happy", "hardy", "helpful", "honest", "hopeful",
    "humble", "jolly", "jovial", "keen", "kind", "lively", "loyal", "lucid", "merry", "mellow", "mighty", "modest",
    "neat", "nimble", "noble", "patient", "peaceful", "plucky", "polite", "proud", "quick", "quiet", "radiant",
    "rapid", "ready", "serene", "sharp", "shy", "sincere", "smart", "snappy", "spry", "steady", "stoic", "sunny",
    "swift", "tender", "thoughtful", "tidy", "tranquil", "trusty", "upbeat", "valiant", "vivid", "warm", "wise",
    "witty", "zealous", "zen",
)

SURNAMES = (
    "agnesi", "hollerith", "khwarizmi", "babbage", "backus", "bardeen", "bell", "berners", "bohr", "boole",
    "brattain", "cerf", "church", "clarke", "codd", "conway", "curie", "dijkstra", "einstein", "engelbart", "euclid",
    "euler", "faraday", "fermat", "fermi", "feynman", "franklin", "galois", "gauss", "goldberg", "hamilton", "hamming",
    "hertz", "hilbert", "hopper", "huffman", "jackson", "johnson", "kahn", "kelvin", "kepler", "knuth", "kowalevski",
    "lamarr", "lamport", "laplace", "leibniz", "liskov", "lovelace", "maxwell", "mccarthy", "meitner", "minsky",
    "morse", "napier", "neumann", "newton", "noether", "nyquist", "ohm", "pascal", "perlman", "planck", "ritchie",
    "riemann", "shannon", "shockley", "somerville", "stallman", "sutherland", "tesla", "thompson", "torvalds",
    "turing", "volta", "watt", "wiener", "wilkes", "wirth", "wozniak", "yalow", "zuse",
)

def _below(n: int) -> int:
    """A random number under ``n`` from the kernel (the bias of 2**32 % n is nothing here); not :mod:`random`,
    whose import is a millisecond of every ``run``."""
    return int.from_bytes(os.urandom(4), "little") % n


def generate(taken: Collection[str], below: Callable[[int], int] = _below) -> str:
    """A name not in ``taken``: ``adjective_surname``; after a few collisions with a digit after it, as Docker's
    (``brave_lovelace3``); with more than a few thousand containers, a number that is free."""

    def pair() -> str:
        return f"{ADJECTIVES[below(len(ADJECTIVES))]}_{SURNAMES[below(len(SURNAMES))]}"

    for attempt in range(10):
        name = pair() + (str(below(10)) if attempt >= 3 else "")
        if name not in taken:
            return name
    base = pair()
    return next(f"{base}{n}" for n in range(10, len(taken) + 11) if f"{base}{n}" not in taken)
