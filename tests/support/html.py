"""Reading a rendered report page: e-mail addresses inside and outside its at-risk section."""

from __future__ import annotations

import re
from html.parser import HTMLParser

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


VOID = {"br", "img", "meta", "hr", "input", "link", "wbr", "source"}


class _Sections(HTMLParser):
    """Splits a page's text (and attribute values) into inside / outside ``id="at-risk"``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # open elements inside the at-risk element (0: outside)
        self.inside: list[str] = []
        self.outside: list[str] = []

    def _keep(self, text: str) -> None:
        (self.inside if self.depth else self.outside).append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if (self.depth or values.get("id") == "at-risk") and tag not in VOID:
            self.depth += 1
        self._keep(" ".join(v for v in values.values() if v and not v.startswith("data:")))

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag not in VOID:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        self._keep(data)


def addresses(html: str) -> tuple[set[str], set[str]]:
    """E-mail addresses inside the at-risk section, and outside it."""
    parser = _Sections()
    parser.feed(html)
    inside = set(EMAIL.findall(" ".join(parser.inside)))
    outside = set(EMAIL.findall(" ".join(parser.outside)))
    return inside, outside
