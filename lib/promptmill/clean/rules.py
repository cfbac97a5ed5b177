"""The rule functions a cleaning preset can use, each built once from its parameters.

A preset names its rules and picks a function with ``use``. Transforms take a
text and return it rewritten; filters take a text and return ``None`` (passes)
or a human-readable reason (dropped). Every regex is compiled when the rule is
built, and the phrases and patterns of one rule are joined into a single
alternation, so judging a prompt costs a handful of C-level regex passes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from promptmill.clean.language import LanguageDetector


class PresetError(ValueError):
    """A preset that cannot be built: unknown rule function, bad or missing parameter."""


# --- helpers -------------------------------------------------------------------------------------------

def _alternation(phrases: list[str] | None, patterns: list[str] | None, words: bool, ignore_case: bool) -> str:
    """One regex for a rule's literal phrases (escaped, word-bounded as one group) and raw patterns."""
    parts = []
    if phrases:
        phrases = sorted({p.lower() if ignore_case else p for p in phrases}, key=len, reverse=True)
        escaped = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in phrases)
        parts.append(rf"(?<!\w)(?:{escaped})(?!\w)" if words else escaped)
    parts.extend(patterns or [])
    if not parts:
        raise PresetError("needs 'phrases' or 'patterns'")
    return "|".join(f"(?:{part})" for part in parts)


_ESCAPES_AND_GROUP_NAMES = re.compile(r"\\.|\(\?P[<=]\w+>?")


class CaseFreeRegex:
    """A case-insensitive regex that runs case-sensitively on the lowercased text.

    Python's re is several times slower with IGNORECASE and loses its literal
    prefix scans, so patterns are written in lower case and matched against
    ``text.lower()``; ASCII text keeps its positions when lowercased, so a
    substitution cuts the original text. Non-ASCII text uses an IGNORECASE twin."""

    def __init__(self, source: str):
        if any(ch.isupper() for ch in _ESCAPES_AND_GROUP_NAMES.sub("", source)):
            raise PresetError("write case-insensitive patterns in lower case (texts are matched lowercased)")
        self.lower = _compile(source, False)
        self.folded = _compile(source, True)

    def search(self, text: str):
        return self.lower.search(text.lower()) if text.isascii() else self.folded.search(text)

    def sub(self, replacement: str, text: str) -> str:
        if not text.isascii():
            return self.folded.sub(lambda _: replacement, text)
        pieces, last = [], 0
        for match in self.lower.finditer(text.lower()):
            pieces += (text[last:match.start()], replacement)
            last = match.end()
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)


def _regex(source: str, ignore_case: bool):
    return CaseFreeRegex(source) if ignore_case else _compile(source, False)


def _compile(source: str, ignore_case: bool) -> re.Pattern:
    try:
        return re.compile(source, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise PresetError(f"bad regex: {exc}") from exc


# --- transforms ----------------------------------------------------------------------------------------

_ASCII_PUNCTUATION = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u2026": "...",
})
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")


def unicode_transform(form: str = "NFKC", ascii_punctuation: bool = True) -> Callable[[str], str]:
    """Unicode normal form, typographic quotes and dashes as ASCII, no invisible or control characters."""
    if form not in ("NFC", "NFKC", "NFD", "NFKD"):
        raise PresetError(f"unknown unicode form {form!r}")

    def apply(text: str) -> str:
        if text.isascii():
            return _INVISIBLE.sub("", text) if not text.isprintable() else text
        text = unicodedata.normalize(form, text)
        if ascii_punctuation:
            text = text.translate(_ASCII_PUNCTUATION)
        return _INVISIBLE.sub("", text)

    return apply


def whitespace_transform() -> Callable[[str], str]:
    """Every run of whitespace (newlines too) becomes one space; no space at either end."""
    return lambda text: " ".join(text.split())


def _required_substrings(requires: list[str] | None, ignore_case: bool) -> Callable[[str], bool]:
    """A cheap gate before a regex: True when the text contains one of the substrings every match
    contains (a speed hint in the preset; without it every text is searched)."""
    if not requires:
        return lambda text: True
    needles = tuple(r.lower() for r in requires) if ignore_case else tuple(requires)
    if ignore_case:
        def worth_trying(text: str) -> bool:
            lowered = text.lower()
            return any(n in lowered for n in needles)

        return worth_trying
    return lambda text: any(n in text for n in needles)


def strip_transform(phrases: list[str] | None = None, patterns: list[str] | None = None,
                    ignore_case: bool = True, words: bool = True, replacement: str = " ",
                    requires: list[str] | None = None) -> Callable[[str], str]:
    """Remove every match of the phrases and patterns (boilerplate, parameters, links)."""
    regex = _regex(_alternation(phrases, patterns, words, ignore_case), ignore_case)
    worth_trying = _required_substrings(requires, ignore_case)
    return lambda text: regex.sub(replacement, text) if worth_trying(text) else text


def extract_transform(patterns: list[str], ignore_case: bool = True) -> Callable[[str], str]:
    """Keep only the named group ``prompt`` of the first pattern that matches (bot message formats)."""
    regexes = [_compile(pattern, ignore_case) for pattern in patterns]
    for regex in regexes:
        if "prompt" not in regex.groupindex:
            raise PresetError(f"pattern {regex.pattern!r} has no (?P<prompt>...) group")

    def apply(text: str) -> str:
        for regex in regexes:
            match = regex.search(text)
            if match:
                return match.group("prompt")
        return text

    return apply


def collapse_repeats_transform() -> Callable[[str], str]:
    """'very very very detailed' -> 'very detailed': a word repeated back to back is kept once."""
    regex = re.compile(r"(?<!\w)(\w+)(?:\s+\1(?!\w))+", re.IGNORECASE)
    return lambda text: regex.sub(r"\1", text)


def underscore_words_transform(min_underscores: int = 2) -> Callable[[str], str]:
    """'a_red_fox_in_snow' -> 'a red fox in snow': only a text with no space and several underscores,
    so kaomoji (^_^) and snake_case inside ordinary prompts stay."""
    def apply(text: str) -> str:
        if " " in text or text.count("_") < min_underscores:
            return text
        return text.replace("_", " ")

    return apply


_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff\u2b00-\u2bff\u2300-\u23ff"
    "\ufe0e\ufe0f\u200d\u20e3]+|<a?:\\w+:\\d+>|:[a-z0-9_+-]+:"
)


def emoji_transform() -> Callable[[str], str]:
    """Unicode emoji, Discord custom emoji <:name:id> and :shortcodes:."""
    return lambda text: _EMOJI.sub(" ", text)


_ASCII_LETTER = re.compile(r"[A-Za-z]")


def non_ascii_lines_transform() -> Callable[[str], str]:
    """Drop the lines without a single ASCII letter (translations, decorations, emoji-only lines)."""
    def apply(text: str) -> str:
        if text.isascii():
            return text
        return "\n".join(line for line in text.splitlines() if _ASCII_LETTER.search(line))

    return apply


_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]|\{\s*\}")
_SEPARATORS = re.compile(r"\s*([.,;])(?:\s*[,;])*")                  # 'a , , b' -> 'a, b'
_SEPARATOR_PAIRS = (" ,", ",,", " ;", ";;", ",;", ";,", ".,", ".;")
_DANGLING_HINTS = (" by,", " and,", " by;", " and;", " by |", " and |")
_DANGLING = re.compile(r"(?:^|\s)(?:by|and)\s*(?=[,;|]|$)", re.IGNORECASE)
_TIDY_EDGES = " ,;:|-/+&"


def _has_dangling(lowered: str) -> bool:
    """A 'by' or 'and' before a separator or at an edge (cheap test before the regex)."""
    return (lowered.endswith((" by", " and")) or lowered.startswith(("by,", "and,", "by;", "and;", "by |"))
            or lowered in ("by", "and") or any(d in lowered for d in _DANGLING_HINTS))


def tidy_transform() -> Callable[[str], str]:
    """Mend what stripping leaves behind: ', ,' runs, empty brackets, a dangling 'by', edge commas."""
    def apply(text: str) -> str:
        if "(" in text or "[" in text or "{" in text:
            text = _EMPTY_BRACKETS.sub(" ", text)
        text = " ".join(text.split())
        if any(pair in text for pair in _SEPARATOR_PAIRS):
            text = _SEPARATORS.sub(r"\1", text)
        lowered = text.lower()
        while _has_dangling(lowered) and (
                (tidier := _SEPARATORS.sub(r"\1", _DANGLING.sub("", text))) != text):
            text, lowered = tidier, tidier.lower()
        return " ".join(text.split()).strip(_TIDY_EDGES)

    return apply


# --- filters -------------------------------------------------------------------------------------------

def length_filter(min_chars: int = 1, max_chars: int = 100_000) -> Callable[[str], str | None]:
    """Text length in characters between min_chars and max_chars, both included."""
    def judge(text: str) -> str | None:
        n = len(text)
        if n < min_chars:
            return f"{n} characters, fewer than {min_chars}"
        if n > max_chars:
            return f"{n} characters, more than {max_chars}"
        return None

    return judge


def reject_filter(phrases: list[str] | None = None, patterns: list[str] | None = None,
                  ignore_case: bool = True, words: bool = True,
                  requires: list[str] | None = None) -> Callable[[str], str | None]:
    """Drop a text containing any of the phrases or patterns; the reason quotes what matched."""
    regex = _regex(_alternation(phrases, patterns, words, ignore_case), ignore_case)
    worth_trying = _required_substrings(requires, ignore_case)

    def judge(text: str) -> str | None:
        match = regex.search(text) if worth_trying(text) else None
        return f"contains {match.group(0)!r}" if match else None

    return judge


def max_count_filter(substring: str, max: int) -> Callable[[str], str | None]:  # noqa: A002 - preset key
    """At most ``max`` occurrences of a substring (case-insensitive for letters)."""
    needle = substring.lower()
    fold = needle != needle.upper()

    def judge(text: str) -> str | None:
        n = (text.lower() if fold else text).count(needle)
        return f"{n} times {substring!r}, more than {max}" if n > max else None

    return judge


def repeated_words_filter(max_ratio: float) -> Callable[[str], str | None]:
    """Share of words that repeat an earlier word (1 - distinct/total) at most max_ratio."""
    def judge(text: str) -> str | None:
        words = text.lower().split()
        if not words:
            return None
        ratio = 1 - len(set(words)) / len(words)
        return f"repeated-word ratio {ratio:.2f} > {max_ratio}" if ratio > max_ratio else None

    return judge


def mean_word_length_filter(min: float) -> Callable[[str], str | None]:  # noqa: A002 - preset key
    """Mean word length at least ``min`` characters (catches '1 2 3 a b c' noise)."""
    def judge(text: str) -> str | None:
        words = text.split()
        if not words:
            return None
        mean = sum(map(len, words)) / len(words)
        return f"mean word length {mean:.2f} < {min}" if mean < min else None

    return judge


def distinct_words_filter(min: int) -> Callable[[str], str | None]:  # noqa: A002 - preset key
    """At least ``min`` distinct words (case-insensitive)."""
    def judge(text: str) -> str | None:
        n = len(set(text.lower().split()))
        return f"{n} distinct words, fewer than {min}" if n < min else None

    return judge


def language_filter(lang: str, min_confidence: float = 0.9, min_chars: int = 12) -> Callable[[str], str | None]:
    """Drop texts confidently detected as another language; unsure or very short texts are kept."""
    detector = LanguageDetector()

    def judge(text: str) -> str | None:
        if len(text) < min_chars:
            return None
        detected, confidence = detector.detect(text)
        if detected != lang and confidence >= min_confidence:
            return f"language {detected} ({confidence:.2f}), not {lang}"
        return None

    return judge


TRANSFORMS: dict[str, Callable[..., Callable[[str], str]]] = {
    "unicode": unicode_transform,
    "whitespace": whitespace_transform,
    "strip": strip_transform,
    "extract": extract_transform,
    "collapse-repeats": collapse_repeats_transform,
    "emoji": emoji_transform,
    "non-ascii-lines": non_ascii_lines_transform,
    "tidy": tidy_transform,
    "underscore-words": underscore_words_transform,
}

FILTERS: dict[str, Callable[..., Callable[[str], str | None]]] = {
    "length": length_filter,
    "reject": reject_filter,
    "max-count": max_count_filter,
    "repeated-words": repeated_words_filter,
    "mean-word-length": mean_word_length_filter,
    "distinct-words": distinct_words_filter,
    "language": language_filter,
}
