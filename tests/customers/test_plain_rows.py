"""The bulk row checks stage exactly what the full row checks stage.

A row whose fields need none of the Unicode work (no control, line-breaking, bidi or
undecodable character; already NFC) goes through its kind's bulk checks (PlainChecks:
trimming, limits, the full check's own functions once per distinct value of a repeating
column, the address's fast path) instead of the full one; whatever they cannot pass goes to
the full check, which words the reason. These tests hold the two together (every row the
bulk checks pass is staged as the full check stages it, value for value) over the bad-input
corpus and over rows Hypothesis builds around every limit and choice, in ASCII and not.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.customers.rows import (
    ACCOUNT_FILE,
    CONTACT_FILE,
    CustomerFile,
    Header,
    ImportError_,
    _checked,
    plain_fields,
    read_header,
    staged_row,
)
from herald.tabular import CsvReader, header_names

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "customers"


Staged = tuple[object, ...] | None


def both(lines: str, header: Header, kind: CustomerFile) -> list[tuple[Staged, Staged]]:
    """Each record of ``lines`` as the bulk checks stage it (None: left to the full check,
    or not plain) and as the full check alone stages it (None: rejected)."""
    reader = CsvReader(io.StringIO(lines, newline=""), reread_failed=True)
    assert kind.plain is not None
    plain = kind.plain(header)
    pairs: list[tuple[Staged, Staged]] = []
    for record in reader.records(len(header.columns)):
        full = _checked(record, header, kind.check)
        slow = None if full.values is None else staged_row(kind.name, full.values, 7)
        fast = None
        if record.fields is not None and plain_fields(",".join(record.fields)):
            staged, _ = plain([(record.line, 7, list(record.fields))])
            fast = staged[0] if staged else None
        pairs.append((fast, slow))
    return pairs


def alike(pairs: list[tuple[Staged, Staged]]) -> int:
    """Every row the bulk checks pass is staged as the full check stages it; how many."""
    for fast, slow in pairs:
        assert fast is None or fast == slow
    return sum(fast is not None for fast, _ in pairs)


def header_of(names: list[str]) -> Header:
    columns = header_names(names)
    attributes = {
        i: name[len("attr.") :] for i, name in enumerate(names) if name.startswith("attr.")
    }
    return Header(columns=columns, attributes=attributes)


class TestTheCorpus:
    def test_every_corpus_row_is_checked_alike(self) -> None:
        """Every row of every readable customer file of the corpus gets the same values, raw
        text and reason from check_record as from the full check."""
        compared = passed = 0
        for path in sorted(CORPUS.glob("*.csv")):
            for kind in (ACCOUNT_FILE, CONTACT_FILE):
                try:
                    header = read_header(path, kind)
                except ImportError_:
                    continue
                text = path.read_bytes().decode("utf-8-sig", "surrogateescape")
                rest = text.partition("\n")[2]
                pairs = both(rest, header, kind)
                passed += alike(pairs)
                compared += len(pairs)
        assert compared > 90
        assert passed > 20


# --------------------------------------------------------------------------- Hypothesis

PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ',"')
# Beyond ASCII: letters that NFC leaves alone or composes (e + U+0301), white space that
# trims (NBSP, ideographic space), a tab (a line break: never plain), Arabic-Indic digits
# (which \d takes), a case mapping that changes the length (İ), a bidi override (refused).
UNICODE = "éüİ\u0301\u00a0\u3000\t\u0661\u0663\u202e"
words = st.text(alphabet=PRINTABLE + UNICODE, max_size=8)
spaced = st.builds(
    lambda a, b, c: f"{a}{b}{c}",
    st.sampled_from(["", " ", "  ", "   "]),
    words,
    st.sampled_from(["", " ", "  x", "  "]),
)


def sized(*limits: int) -> st.SearchStrategy[str]:
    """Text at and around the given lengths (after trimming), with spaces around or not."""
    return st.builds(
        lambda n, pad, char: pad + char * n + pad,
        st.sampled_from([n + d for n in limits for d in (-1, 0, 1)]),
        st.sampled_from(["", " "]),
        st.sampled_from(["a", "B", "-"]),
    )


def cell(*extra: str, limits: tuple[int, ...] = ()) -> st.SearchStrategy[str]:
    choices = [spaced, st.sampled_from(["", " ", *extra])]
    if limits:
        choices.append(sized(*limits))
    return st.one_of(*choices)


ACCOUNT_CELLS = {
    "external_id": cell("ACC-1", "acc 2", limits=(100,)),
    "name": cell("Iron  Lumen", " Acme ", limits=(300,)),
    "tier": cell("Business", "ENTERPRISE", "İ", "Ünï", limits=(50,)),
    "region": cell("na", "EU", limits=(50,)),
    "industry": cell("Manufacturing", limits=(100,)),
    "lifecycle": cell("active", "Churned", " ACTIVE ", "gone"),
    "migration_state": cell("migrated", "In_Progress", "not_started", "done"),
    "migrated_on": cell("2026-01-31", "2026-02-30", "20260131", "2026-1-1", " 2026-01-31 "),
    "attr.flag": cell(
        "true",
        "YES",
        "no",
        "False",
        "1",
        "-0",
        "+12",
        "3.2",
        "-0.0",
        "1e5",
        ".5",
        "\u0661\u0662",
        "é",
    ),
    "attr.Owner": cell("Dana  Whitfield", "12345678901234567", "1.", "e5", "nan", "inf"),
}
CONTACT_CELLS = {
    "account_external_id": cell("ACC-1", limits=(100,)),
    "email": cell(
        "a@b.com",
        " Bob.Smith@Example.COM ",
        "user@host.local",
        "user@example.1c",
        "user@example.c1",
        "no-at-sign",
        "a@xn--bcher-kva.example",
        "a@xn--a.com",
        "info@ab--cd.com",
        "x@" + "a" * 64 + ".com",
    ),
    "name": cell("Ada  Lovelace", "José", "Jose\u0301", "\u00a0Ann\u3000", limits=(300,)),
    "role": cell("executive", "Technical", " OTHER ", "boss"),
    "timezone": cell(
        "Europe/Paris", "europe/paris", "UTC", "Mars/Base", " Asia/Tokyo ", "\u00a0UTC"
    ),
    "locale": cell("en", "pt-BR", "pt_br", "es-419", "EN-us", "english", "e"),
}


@st.composite
def files(draw: st.DrawFn, cells: dict[str, st.SearchStrategy[str]]) -> tuple[Header, str]:
    """A header (some optional columns left out, in any order) and a few rows under it,
    written by csv.writer (so a cell with a quote or a comma is quoted) or joined plainly."""
    names = draw(st.permutations(list(cells)))
    keep = [n for n in names if n in ("external_id", "name", "tier", "region", "email")]
    keep += [
        n for n in names if n not in keep and n != "account_external_id" and draw(st.booleans())
    ]
    if "email" in cells:
        keep.insert(0, "account_external_id")
    rows = draw(
        st.lists(st.fixed_dictionaries({n: cells[n] for n in keep}), min_size=1, max_size=4)
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        if draw(st.booleans()):
            writer.writerow([row[n] for n in keep])
        else:
            buffer.write(",".join(row[n] for n in keep) + draw(st.sampled_from(["\n", "\r\n"])))
    return header_of(keep), buffer.getvalue()


class TestBuiltRows:
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(files(ACCOUNT_CELLS))
    def test_accounts(self, drawn: tuple[Header, str]) -> None:
        """Any account row built around the limits and choices is checked alike."""
        header, lines = drawn
        alike(both(lines, header, ACCOUNT_FILE))

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(files(CONTACT_CELLS))
    def test_contacts(self, drawn: tuple[Header, str]) -> None:
        """Any contact row built around the limits, choices and addresses is checked alike."""
        header, lines = drawn
        alike(both(lines, header, CONTACT_FILE))
