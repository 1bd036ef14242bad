"""SMS text: one 160-character GSM-7 segment where possible.

GSM 03.38's basic set encodes a character in 7 bits; its extension set (``^{}\\[~]|€`` and form
feed) takes two. A character outside both forces UCS-2 and a 70-character segment, so common
typographic characters are first replaced by GSM-7 look-alikes.
"""

from __future__ import annotations

SEGMENT = 160

_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENDED = set("^{}\\[~]|€\f")
_REPLACE = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2026": "...",
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\u2022": "-",
    "\u00b7": "-",
}


def gsm7_length(text: str) -> int | None:
    """Septets needed, or None when ``text`` is not GSM-7 encodable."""
    total = 0
    for ch in text:
        if ch in _BASIC:
            total += 1
        elif ch in _EXTENDED:
            total += 2
        else:
            return None
    return total


def fit_sms(text: str) -> str:
    """Normalise to GSM-7 where a look-alike exists, squeeze whitespace, and cut to one segment
    (ending with "...") when the template's text is longer than one."""
    text = " ".join("".join(_REPLACE.get(ch, ch) for ch in text).split())
    length = gsm7_length(text)
    if length is None or length <= SEGMENT:
        return text if length is not None or len(text) <= 70 else text[:67] + "..."
    cut = text
    while (gsm7_length(cut) or 0) > SEGMENT - 3:
        cut = cut[:-1]
    return cut.rstrip() + "..."
