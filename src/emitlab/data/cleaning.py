"""Configurable text normalisation for EMit tweets and YouTube comments.

The in-domain EMit texts are Italian tweets: they carry ``RT @user:`` prefixes,
``@user`` mentions (already anonymised), URLs (mostly ``https://t.co/...``),
``#hashtags`` (often CamelCase, e.g. ``#BuonaDomenica``) and emoji.  The
out-of-domain texts are YouTube comments.  :class:`TextCleaner` applies a fixed,
sensible sequence of rules, each of which is switched by a field of
:class:`CleaningConfig`:

1. ``retweet_prefix`` -- a leading ``RT @name:`` / ``RT :`` / ``RT`` (repeated
   prefixes too); an ``RT`` anywhere else is left alone.
2. ``urls`` -- ``http(s)://...``, ``www....`` and ``t.co/...`` links.  URLs are
   found *before* every later rule and kept URLs are shielded from them, so a
   ``#`` or ``@`` inside a link is never treated as a hashtag or a mention and
   a kept link is never lower-cased or de-duplicated.
3. ``mentions`` -- ``@name`` (not e-mail addresses).
4. ``hashtags`` (+ ``split_camel_case``).
5. ``emoji`` -- via the ``emoji`` library, Italian names.
6. ``max_repeat_chars`` -- caps runs of one repeated non-digit character.
7. ``lowercase``.
8. ``normalize_whitespace`` -- last, so it tidies up what the other rules left.

The configuration (:class:`emitlab.settings.CleaningConfig`, re-exported here) round-trips
through JSON with :meth:`CleaningConfig.to_dict` / :meth:`CleaningConfig.from_dict` (also
available on :class:`TextCleaner`), so it can be stored next to a model and the same cleaning
re-applied at inference.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import emoji as _emoji

# The settings live with every other settings group; re-exported here, where they are applied.
from emitlab.settings import MENTION_PLACEHOLDER, URL_PLACEHOLDER, CleaningConfig

__all__ = ["CleaningConfig", "TextCleaner", "URL_PLACEHOLDER", "MENTION_PLACEHOLDER"]


# --------------------------------------------------------------------------
# Regular expressions (compiled once, at import).

# A leading retweet marker, possibly repeated: "RT @name:", "RT @name", "RT :", "RT".
# "RT" must be upper-case and followed by whitespace, a colon or the end.
_RT_PREFIX_RE = re.compile(r"^\s*(?:RT(?=[\s:]|$)\s*(?:@\w+)?\s*:?\s*)+")

# URLs: scheme links (even when glued to a preceding word, as in truncated tweets),
# www. links and bare t.co links.  The body is restricted to ASCII plus Latin
# letters so that an emoji glued to a link is not swallowed.  Trailing sentence
# punctuation is given back to the text (see TextCleaner.__call__).
_URL_BODY = r"[!-~\u00c0-\u024f]*"
_URL_RE = re.compile(
    rf"(?:https?://|(?<![\w.@/-])www\.|(?<![\w.@/-])t\.co/){_URL_BODY}",
    re.IGNORECASE,
)
_URL_TRAILING = ".,;:!?'\"()[]{}<>*"
_URL_PREFIXES = ("http://", "https://", "www.", "t.co/")

# @mentions: not part of an e-mail address or a path ("a@b", "/@b").
_MENTION_RE = re.compile(r"(?<![\w@/.])@\w+")

# #hashtags: at least one letter (so "#1" or HTML "&#39;" are not hashtags).
_HASHTAG_RE = re.compile(r"(?<![\w&#/])#(\w*[^\W\d_]\w*)")

# The two private-use characters used as emoji delimiters for demojize().
_EMO_OPEN, _EMO_CLOSE = "\ue000", "\ue001"
_EMO_SENTINELS_RE = re.compile(f"[{_EMO_OPEN}{_EMO_CLOSE}]")
_EMO_NAME_RE = re.compile(f"{_EMO_OPEN}([^{_EMO_OPEN}{_EMO_CLOSE}]*){_EMO_CLOSE}")
# Variation selectors / joiners left over once the emoji themselves are gone.
_EMO_LEFTOVER_RE = re.compile("[\ufe0e\ufe0f\u200d\u20e3]")

_WHITESPACE_RE = re.compile(r"\s+")


# Where a replacement word needs no separating space: after opening brackets,
# before closing brackets and sentence punctuation.
_NO_SPACE_AFTER = "([{«"
_NO_SPACE_BEFORE = ".,;:!?)]}»…"


def _needs_space_before(prev: str) -> bool:
    """Does a new word written after the character ``prev`` need a space in between?"""
    return bool(prev) and not prev.isspace() and prev not in _NO_SPACE_AFTER


def _needs_space_after(nxt: str) -> bool:
    """Does a new word written before the character ``nxt`` need a space in between?"""
    return bool(nxt) and not nxt.isspace() and nxt not in _NO_SPACE_BEFORE


def _padded_sub(pattern: re.Pattern[str], repl: Callable[[re.Match[str]], str], text: str) -> str:
    """Like ``pattern.sub(repl, text)``, but a non-empty replacement gets a space on
    either side where it would otherwise touch a non-space character, so the new
    words never glue to their neighbours (and two adjacent matches get one space
    between them, not two)."""
    out: list[str] = []
    last = ""  # the last character written to out
    pos = 0
    for m in pattern.finditer(text):
        before = text[pos : m.start()]
        if before:
            out.append(before)
            last = before[-1]
        word = repl(m)
        if word:
            if _needs_space_before(last):
                word = " " + word
            following_match = pattern.match(text, m.end()) is not None
            if not following_match and _needs_space_after(text[m.end() : m.end() + 1]):
                word += " "
            out.append(word)
            last = word[-1]
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def _split_camel_case(tag: str) -> str:
    """``BuonaDomenica`` -> ``Buona Domenica``; ``TGLa7`` -> ``TG La 7``.

    Only tags that mix upper- and lower-case letters are split; all-caps
    (``COVID19``) and all-lowercase (``governoconte``) tags are returned whole.
    """
    if not (any(c.isupper() for c in tag) and any(c.islower() for c in tag)):
        return tag
    pieces: list[str] = []
    for i, c in enumerate(tag):
        if i > 0:
            p = tag[i - 1]
            n = tag[i + 1] if i + 1 < len(tag) else ""
            boundary = (
                (p.islower() and c.isupper())  # buonaDomenica
                or (p.isupper() and c.isupper() and n.islower())  # TGLa -> TG La
                or (p.isalpha() and c.isdigit())  # Italia2020
                or (p.isdigit() and c.isalpha())  # 5Stelle
            )
            if boundary:
                pieces.append(" ")
        pieces.append(c)
    return "".join(pieces)


class TextCleaner:
    """Apply a :class:`CleaningConfig` to texts: ``cleaner(text)`` or ``cleaner.clean_many(texts)``."""

    def __init__(self, config: CleaningConfig | None = None) -> None:
        self.config = config if config is not None else CleaningConfig()
        if not isinstance(self.config, CleaningConfig):
            raise TypeError(f"TextCleaner expects a CleaningConfig, got {type(self.config).__name__}")
        if self.config.max_repeat_chars > 0:
            n = self.config.max_repeat_chars
            self._repeat_re: re.Pattern[str] | None = re.compile(rf"([^\d])\1{{{n},}}", re.DOTALL)
        else:
            self._repeat_re = None

    def __repr__(self) -> str:
        return f"TextCleaner({self.config!r})"

    # -- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextCleaner:
        return cls(CleaningConfig.from_dict(data))

    # -- cleaning ----------------------------------------------------------
    def __call__(self, text: str) -> str:
        cfg = self.config
        if not cfg.enabled:
            return text
        if not isinstance(text, str):
            raise TypeError(f"TextCleaner expects a str, got {type(text).__name__}")

        if cfg.retweet_prefix == "remove":
            text = _RT_PREFIX_RE.sub("", text, count=1)

        # Split off URLs, so that no later rule looks inside them; the other rules
        # run on the stretches of text between the URLs.
        pieces: list[str] = []
        placeholders: set[int] = set()  # indices in pieces that hold URL_PLACEHOLDER
        pos = 0
        for m in _URL_RE.finditer(text):
            start, end = m.start(), m.end()
            while end > start and text[end - 1] in _URL_TRAILING:
                end -= 1  # sentence punctuation after a link belongs to the sentence
            core = text[start:end].lower()
            if any(prefix.startswith(core) for prefix in _URL_PREFIXES):
                continue  # a bare "https://" or "www." is not a link
            pieces.append(self._clean_chunk(text[pos:start]))
            if cfg.urls == "keep":
                pieces.append(text[start:end])
            elif cfg.urls == "token":
                placeholders.add(len(pieces))
                pieces.append(URL_PLACEHOLDER)
            pos = end
        pieces.append(self._clean_chunk(text[pos:]))
        # Keep a placeholder from gluing to its neighbours ("vedihttps://..." -> "vedi url").
        joined = ""
        for i, piece in enumerate(pieces):
            if i in placeholders:
                if _needs_space_before(joined[-1:]):
                    piece = " " + piece
                nxt = next((p for p in pieces[i + 1 :] if p), "")
                if _needs_space_after(nxt[:1]):
                    piece += " "
            joined += piece
        text = joined

        if cfg.normalize_whitespace:
            text = _WHITESPACE_RE.sub(" ", text).strip()
        return text

    def _clean_chunk(self, text: str) -> str:
        """The rules after URL handling, applied to a stretch of text that holds no URL."""
        cfg = self.config
        if not text:
            return text

        if cfg.mentions == "token":
            text = _MENTION_RE.sub(MENTION_PLACEHOLDER, text)
        elif cfg.mentions == "remove":
            text = _MENTION_RE.sub("", text)

        if cfg.hashtags == "remove":
            text = _HASHTAG_RE.sub("", text)
        elif cfg.hashtags == "word":
            split = cfg.split_camel_case

            def _word(m: re.Match[str]) -> str:
                words = [w for w in m.group(1).split("_") if w]
                if split:
                    words = [_split_camel_case(w) for w in words]
                return " ".join(words)

            text = _HASHTAG_RE.sub(_word, text)

        if cfg.emoji == "words":
            text = _EMO_SENTINELS_RE.sub("", text)
            text = _emoji.demojize(text, language="it", delimiters=(_EMO_OPEN, _EMO_CLOSE))
            text = _padded_sub(_EMO_NAME_RE, lambda m: m.group(1).replace("_", " ").strip(), text)
            text = _EMO_LEFTOVER_RE.sub("", text)
        elif cfg.emoji == "remove":
            text = _emoji.replace_emoji(text, replace="")
            text = _EMO_LEFTOVER_RE.sub("", text)

        if self._repeat_re is not None:
            n = cfg.max_repeat_chars
            text = self._repeat_re.sub(lambda m: m.group(1) * n, text)

        if cfg.lowercase:
            text = text.lower()
        return text

    def clean_many(self, texts: Iterable[str]) -> list[str]:
        return [self(t) for t in texts]
