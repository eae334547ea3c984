"""A Unicode-aware word tokenizer, shared by the caption vocabularies and the caption metrics.

The tokenizer works for any script (Latin, Cyrillic, Greek, Arabic, Devanagari with its combining marks, CJK),
unlike the Stanford PTB tokenizer used by coco-caption, which drops or mangles non-ASCII text. Rules:

* text is NFKC-normalised (full-width letters, ligatures) and lower-cased (``str.lower``, so ``ß`` stays ``ß``);
* a word is a run of letters, combining marks and digits, with inner apostrophes or hyphens kept
  (``t-shirt``, ``don't``, ``по-русски``); decimal numbers stay whole (``3.5``);
* Han, Hiragana and Katakana characters are one token each (those scripts do not separate words by spaces);
* every other non-space character (punctuation, symbols, emoji) is a token of its own, or dropped with
  ``punct=False`` (what caption metrics do, like coco-caption's punctuation filter).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import regex

_W = r"[\p{L}\p{M}\p{N}]"
_TOKEN_RE = regex.compile(
    r"[\p{Han}\p{Hiragana}\p{Katakana}]"  # one CJK character per token
    rf"|\p{{N}}+(?:[.,]\p{{N}}+)+"  # 3.5, 1,000
    rf"|{_W}+(?:['’\-]{_W}+)*"  # words with inner apostrophes / hyphens
    r"|[^\s\p{L}\p{M}\p{N}]"  # any other visible character: punctuation, symbols, emoji
)
_WORDISH = regex.compile(r"[\p{L}\p{M}\p{N}]")
_NO_SPACE_BEFORE = set(".,!?;:)]}%…»")
_NO_SPACE_AFTER = set("([{«")


def tokenize(text: str, lower: bool = True, punct: bool = True) -> list[str]:
    """Split ``text`` into word and punctuation tokens (see the module docstring for the rules).

    Args:
        text: any Unicode string.
        lower: lower-case the tokens.
        punct: keep punctuation/symbol tokens; ``False`` keeps only tokens containing a letter or digit.
    """
    text = unicodedata.normalize("NFKC", text)
    if lower:
        text = text.lower()
    tokens = _TOKEN_RE.findall(text)
    if not punct:
        tokens = [t for t in tokens if _WORDISH.search(t)]
    return tokens


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens with spaces, without a space before closing punctuation or after opening brackets."""
    out: list[str] = []
    for tok in tokens:
        if out and not (tok in _NO_SPACE_BEFORE or out[-1] in _NO_SPACE_AFTER):
            out.append(" ")
        out.append(tok)
    return "".join(out)
