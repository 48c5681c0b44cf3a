"""The ledger key a message carries: written once, read back by SendGrid's events."""

from __future__ import annotations

import pytest

from herald.delivery.keys import MAX_CONTACT_ID, LedgerKey, Outcome


def test_a_customer_key_reads_back_as_written() -> None:
    key = LedgerKey("modular-migration-2027", "sunset-t30@2027-09-30", 42)
    assert key.format() == "modular-migration-2027/sunset-t30@2027-09-30/42"
    assert LedgerKey.parse(key.format()) == key
    assert key.contact_id == 42


def test_a_report_key_is_herald_s_but_names_no_contact() -> None:
    key = LedgerKey.of_report("c", "weekly-2027-03-01", 7)
    assert key.format() == "c/weekly-2027-03-01/leadership-7"
    assert LedgerKey.parse(key.format()) == key
    assert key.contact_id is None


@pytest.mark.parametrize(
    "value", ["", "not-a-key", "c/m", "c//1", "/m/1", "c/m/x1", "c/m/1/2", "c/m/\u0661", "c/m/-1"]
)
def test_what_is_not_a_key_is_none(value: str) -> None:
    assert LedgerKey.parse(value) is None


@pytest.mark.parametrize("contact", ["0", str(MAX_CONTACT_ID + 1), "9" * 40])
def test_a_contact_id_outside_the_column_raises(contact: str) -> None:
    with pytest.raises(ValueError, match=r"^contact id .* is outside 1\.\.2147483647$"):
        LedgerKey.parse(f"c/m/{contact}")


def test_outcomes_are_stored_as_their_text() -> None:
    assert [str(outcome) for outcome in Outcome] == ["accepted", "failed", "unknown"]
    assert Outcome.ACCEPTED == "accepted"
