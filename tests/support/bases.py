"""A small, real customer base in a test database, and the eligible audience computed by hand.

``eligible`` re-states the audience rules in plain SQL, independently of
:mod:`herald.delivery.audience`, so a test compares Herald's ledger against a second opinion.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date
from pathlib import Path

from sqlalchemy import text

from herald.config import HeraldConfig, PhaseName, load_config
from herald.customers.importer import import_customers
from herald.customers.segmentation import assign_segments
from herald.delivery.sender import Delivered, Renderer, deliver_message
from herald.delivery.transports.outbox import OutboxTransport
from herald.sandbox.demo import write_demo_base
from herald.settings import get_settings
from herald.unsubscribe.links import UnsubscribeLinks
from tests.support.environment import ROOT, Database

DAY = date(2026, 11, 24)


def config() -> HeraldConfig:
    """The repository's campaign config."""
    return load_config(ROOT / "config")


def judged_on_any_sample(loaded: HeraldConfig) -> HeraldConfig:
    """``loaded`` with no minimum sample on any target: the hand-built campaigns of the
    metrics tests are a few accounts, and their statuses are what those tests check."""
    targets = {
        metric: target.model_copy(update={"min_sample": 0})
        for metric, target in loaded.targets.targets.items()
    }
    return replace(loaded, targets=loaded.targets.model_copy(update={"targets": targets}))


def load_base(db: Database, tmp_path: Path, accounts: int = 120, seed: int = 5) -> HeraldConfig:
    """Import a demo base of ``accounts`` accounts and segment it as of DAY."""
    files = write_demo_base(tmp_path / "demo", accounts=accounts, seed=seed)
    import_customers(
        engine=db.engine,
        accounts_csv=files.accounts_csv,
        contacts_csv=files.contacts_csv,
        rejects_dir=tmp_path / "rejects",
    )
    loaded = config()
    assign_segments(engine=db.engine, config=loaded.segments, as_of=DAY)
    return loaded


def suppress(db: Database, emails: list[str], reason: str = "unsubscribe") -> None:
    """Add suppressions for these addresses."""
    with db.engine.begin() as conn:
        for email in emails:
            conn.execute(
                text(
                    "INSERT INTO suppression (email, reason, source, created_at) "
                    "VALUES (:email, :reason, 'test', CURRENT_TIMESTAMP)"
                ),
                {"email": email, "reason": reason},
            )


def some_contacts(db: Database, count: int, offset: int = 0) -> list[str]:
    """E-mail addresses of contacts of active, not migrated accounts (lowest ids first)."""
    with db.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT c.email FROM contact c JOIN account a ON a.id = c.account_id "
                    "WHERE a.lifecycle = 'active' AND a.migration_state <> 'migrated' "
                    "ORDER BY c.id LIMIT :count OFFSET :offset"
                ),
                {"count": count, "offset": offset},
            ).scalars()
        )


def eligible(db: Database, loaded: HeraldConfig, phase: str) -> set[str]:
    """The phase's audience by hand: active, in its segments and roles, not suppressed/migrated."""
    audience = loaded.campaign.audiences[phase]  # type: ignore[index]
    segments = ", ".join(f"'{s}'" for s in audience.segments)
    roles = ", ".join(f"'{r}'" for r in audience.roles)
    migrated = "AND a.migration_state <> 'migrated'" if audience.exclude_migrated else ""
    with db.engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT c.email FROM contact c "
                    "JOIN account a ON a.id = c.account_id "
                    "JOIN segment_assignment s ON s.account_id = a.id AND s.as_of = :day "
                    f"WHERE a.lifecycle = 'active' AND s.segment IN ({segments}) "
                    f"AND c.role IN ({roles}) {migrated} "
                    "AND c.email NOT IN (SELECT email FROM suppression)"
                ),
                {"day": DAY.isoformat() if db.backend == "sqlite" else DAY},
            ).scalars()
        )


def ledger_emails(db: Database, phase: str, state: str | None = None) -> list[str]:
    """Addresses with a ledger row for the phase (optionally in one state), duplicates kept."""
    where = "AND d.state = :state" if state else ""
    with db.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT c.email FROM delivery d JOIN contact c ON c.id = d.contact_id "
                    f"WHERE d.message = :phase {where}"
                ),
                {"phase": phase, "state": state},
            ).scalars()
        )


def deliver_by_outbox(
    db: Database, loaded: HeraldConfig, tmp_path: Path, phase: PhaseName
) -> Delivered:
    """Send ``phase``'s planned rows through the outbox (under ``tmp_path``), outside any
    flow, as one sender: what ``deliver_message`` did."""
    return deliver_message(
        db.engine,
        config=loaded,
        phase=phase,
        message=phase,
        transport=OutboxTransport(tmp_path / "outbox"),
        renderer=Renderer(loaded),
        links=UnsubscribeLinks.configured(get_settings(), loaded.campaign),
        log=logging.getLogger(f"tests.delivery.{phase}"),
        window=False,
    )
