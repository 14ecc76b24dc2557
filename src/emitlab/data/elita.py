"""ELIta (Emotion Lexicon for Italian, CC0, vendored in ``emitlab/resources/elita``): the file and
its ratings, for the lexicon member's features and the rare-emotion word substitution.

``ELIta_INTENSITY.txt`` holds ``item,dimension,value`` lines: nine emotion dimensions rated 0..1
and valence/arousal/dominance rated 1..9, for words, multi-word expressions (``_``-joined) and
emoji.
"""

from __future__ import annotations

from importlib import resources

#: ELIta's emotion dimensions, in feature order, with the EMit label each one names.
EMOTIONS: dict[str, str] = {
    "gioia": "Joy", "tristezza": "Sadness", "rabbia": "Anger", "disgusto": "Disgust", "paura": "Fear",
    "fiducia": "Trust", "sorpresa": "Surprise", "aspettativa": "Anticipation", "amore": "Love",
}
#: Valence, arousal, dominance (1..9 in the file, rescaled to -1..1 by the lexicon member).
VAD: tuple[str, ...] = ("valenza", "attivazione", "dominanza")
DIMENSIONS: tuple[str, ...] = tuple(EMOTIONS) + VAD

LEXICON_FILE = "ELIta_INTENSITY.txt"
LEXICON_SHA256 = "2e954d01fb8a76b311026503848994cb09d2c02a844f6c79a33543317b4a0909"


def lexicon_bytes() -> bytes:
    """The vendored ``ELIta_INTENSITY.txt`` (package data)."""
    return (resources.files("emitlab") / "resources" / "elita" / LEXICON_FILE).read_bytes()


def read_ratings(data: bytes) -> dict[str, dict[str, float]]:
    """``item -> {dimension: value}`` from the file's bytes, in the file's order of items."""
    ratings: dict[str, dict[str, float]] = {}
    for line in data.decode("utf-8").splitlines():
        if not line.strip():
            continue
        item, dim, value = line.rsplit(",", 2)
        ratings.setdefault(item, {})[dim] = float(value)
    return ratings
