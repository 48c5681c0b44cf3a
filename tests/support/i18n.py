"""What the translation tests share: the English catalog's sentences."""

from __future__ import annotations

import re

from babel.messages.pofile import read_po

from tests.support.environment import ROOT

POT = ROOT / "templates" / "locales" / "messages.pot"
_PLACEHOLDER = re.compile(r"%\(\w+\)s")


def english_fragments() -> set[str]:
    """The English catalog's sentences, cut at their placeholders: every piece of three words
    or more (what a translation must not leave in English)."""
    fragments = set()
    with POT.open("rb") as file:
        for message in read_po(file):
            for source in (message.id,) if isinstance(message.id, str) else message.id:
                for piece in _PLACEHOLDER.split(source):
                    piece = piece.strip(" .,:;()")
                    if len(piece.split()) >= 3:
                        fragments.add(piece)
    return fragments
