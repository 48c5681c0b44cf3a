"""The SendGrid request body, built per recipient as plain dicts, is byte for byte the body
the official Mail helper objects make (tests/support/sendgrid_reference.py), and valid."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from herald.config import HeraldConfig, load_config
from herald.delivery.messages import Rendered, Variant, recipient_values, render
from herald.delivery.transports import (
    Attachment,
    OutgoingBatch,
    Recipient,
    without,
)
from herald.delivery.transports.sendgrid import SendGridTransport
from herald.testing.fake_sendgrid import mail_send_violations
from tests.support.environment import KEY, ROOT
from tests.support.sendgrid_reference import helper_body, one_at_a_time

CONFIG = load_config(ROOT / "config")
VARIANTS = [
    Variant("announcement", "standard", "executive", "en"),
    Variant("announcement", "conservative", "technical", "de"),
    Variant("announcement", "early_adopter", "other", "ja"),
]
RENDERED: dict[Variant, Rendered] = {v: render(CONFIG, v) for v in VARIANTS}
NAMES = [
    None,
    "",
    "Zoë Ångström",
    "O'Brien, Pat",
    'Dr. "Ace" Smith; Jr',
    "<script>alert(1)</script>",
    "李雷",
    "Name <other@evil.example>",
]


def _batch(
    config: HeraldConfig, people: list[tuple[str | None, int]], **extra: object
) -> OutgoingBatch:
    recipients = []
    for number, (name, variant_no) in enumerate(people, start=1):
        address = f"person{number}@example.com"
        headers = {"List-Unsubscribe": f"<https://u.example/{number}>"} if number % 3 else {}
        recipients.append(
            Recipient(
                number,
                f"c/announcement/{number}",
                address,
                name,
                VARIANTS[variant_no],
                recipient_values(name=name, email=address, account_name="Acme, Inc. & Sons"),
                headers,
            )
        )
    return OutgoingBatch(
        "batch-1",
        config.campaign.id,
        "announcement",
        config.campaign.sender,
        {v: RENDERED[v] for v in {r.variant for r in recipients}},
        recipients,
        [config.campaign.id, "announcement"],
        **extra,  # type: ignore[arg-type]
    )


def _both(config: HeraldConfig, batch: OutgoingBatch) -> tuple[str, str]:
    transport = SendGridTransport(SecretStr(KEY), "http://127.0.0.1:9", config.campaign.sending)
    prepared = transport.prepare(batch)
    checked, _ = one_at_a_time(batch)
    kept = without(batch, prepared.refused)
    reference = helper_body(config.campaign.sending, kept, checked) if checked else None
    return json.dumps(prepared.payload), json.dumps(reference)


class TestPlainBodies:
    @pytest.mark.parametrize("sandbox", [False, True])
    def test_every_name_shape_gives_the_helpers_bytes(self, sandbox: bool) -> None:
        """Names missing, empty, with commas, quotes, markup, non-Latin letters or an
        address inside; recipients with and without their own headers; three variants; an
        attachment; the unsubscribe group and sandbox: the same bytes as the helpers make,
        and a body SendGrid's schema accepts."""
        sending = CONFIG.campaign.sending.model_copy(
            update={"asm_group_id": 4242, "sandbox": sandbox}
        )
        config = replace(CONFIG, campaign=CONFIG.campaign.model_copy(update={"sending": sending}))
        people = [(name, n % 3) for n, name in enumerate(NAMES * 3)]
        batch = _batch(
            config,
            people,
            attachments=[Attachment("chart.png", b"\x89PNG", "image/png", "chart")],
        )
        plain, helpers = _both(config, batch)
        assert plain == helpers
        assert mail_send_violations(json.loads(plain)) == []

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(st.one_of(st.none(), st.text(max_size=40)), st.integers(0, 2)),
            min_size=1,
            max_size=30,
        )
    )
    def test_any_names_give_the_helpers_bytes(self, people: list[tuple[str | None, int]]) -> None:
        """Whatever the names (Hypothesis), the plain body equals the helpers' body, the
        recipients whose values cannot go in a header refused alike."""
        plain, helpers = _both(CONFIG, _batch(CONFIG, people))
        assert plain == helpers
