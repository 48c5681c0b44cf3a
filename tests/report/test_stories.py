"""Customer success stories: which accounts are proposed as case studies, the CSV, and the
draft `herald stories draft` writes from one account's own measurements."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from typer.testing import CliRunner

from herald.cli.app import app
from herald.config import HeraldConfig
from herald.models import (
    ACCOUNT,
    CONTACT,
    PERFORMANCE_REPORT,
    SATISFACTION_RESPONSE,
    SEGMENT_ASSIGNMENT,
)
from herald.report.stories import candidates_csv, story_candidates
from tests.support.bases import config
from tests.support.environment import Database

DAY = date(2027, 6, 1)
NOON = datetime(2027, 5, 5, 12, tzinfo=UTC)

# external id: (migrated_on, attributes, reports [(legacy ms, new ms, legacy MB, new MB)],
#               survey answers [(csat, performance improved)])
ACCOUNTS: dict[str, tuple[date | None, dict[str, Any], list[tuple[float, ...]], list[Any]]] = {
    # 2 reports: the latest (120x) counts, not the older 10x; answers 5 and 4.
    "S1": (
        date(2027, 5, 1),
        {"case_study_consent": True, "use_case": "data pipelines"},
        [(1000.0, 100.0, 400.0, 40.0), (2400.0, 20.0, 512.0, 1.5)],
        [(5, True), (4, None)],
    ),
    "S2": (  # 150x, but no consent
        date(2027, 5, 1),
        {"case_study_consent": False},
        [(3000.0, 20.0, 512.0, 1.5)],
        [(5, True)],
    ),
    "S3": (  # 60x, consent, the best that remains after S1
        date(2027, 5, 2),
        {"case_study_consent": True},
        [(1200.0, 20.0, 256.0, 1.0)],
        [(5, True)],
    ),
    "S4": (  # consent, fast, but satisfaction averages 3.5
        date(2027, 5, 2),
        {"case_study_consent": True},
        [(2000.0, 20.0, 512.0, 1.5)],
        [(4, True), (3, True)],
    ),
    "S5": (  # consent, fast, happy, but one answer says performance did not improve
        date(2027, 5, 2),
        {"case_study_consent": True},
        [(2000.0, 20.0, 512.0, 1.5)],
        [(5, True), (5, False)],
    ),
    "S6": (  # consent, happy, but only 1.5x faster (min_speedup 2)
        date(2027, 5, 2),
        {"case_study_consent": True},
        [(30.0, 20.0, 512.0, 1.5)],
        [(5, True)],
    ),
    "S7": (  # consent, fast, happy, not migrated
        None,
        {"case_study_consent": True},
        [(2000.0, 20.0, 512.0, 1.5)],
        [(5, True)],
    ),
    "S8": (  # consent, fast, no survey answer
        date(2027, 5, 2),
        {"case_study_consent": True},
        [(2000.0, 20.0, 512.0, 1.5)],
        [],
    ),
}


def build_stories(engine: Engine) -> None:
    with engine.begin() as conn:
        for number, (external_id, (migrated_on, attributes, reports, answers)) in enumerate(
            ACCOUNTS.items(), start=1
        ):
            conn.execute(
                insert(ACCOUNT).values(
                    id=number,
                    external_id=external_id,
                    name=f"Story {external_id}",
                    tier="enterprise",
                    region="emea",
                    industry="logistics",
                    lifecycle="active",
                    migration_state="migrated" if migrated_on else "in_progress",
                    migrated_on=migrated_on,
                    attributes=attributes,
                )
            )
            conn.execute(
                insert(SEGMENT_ASSIGNMENT).values(
                    account_id=number,
                    as_of=date(2027, 1, 5),
                    segment="early_adopter",
                    rule="test",
                    readiness="ready",
                    readiness_rule="test",
                )
            )
            conn.execute(
                insert(CONTACT),
                [
                    {"account_id": number, "email": f"tech{number}@s.example", "role": "technical"},
                    {"account_id": number, "email": f"ceo{number}@s.example", "role": "executive"},
                ],
            )
            for index, (legacy, new, legacy_mb, new_mb) in enumerate(reports):
                conn.execute(
                    insert(PERFORMANCE_REPORT).values(
                        report_id=f"P-{external_id}-{index}",
                        account_id=number,
                        reported_at=datetime(2027, 5, 10 + index, 12, tzinfo=UTC),
                        legacy_import_ms=legacy,
                        new_import_ms=new,
                        legacy_memory_mb=legacy_mb,
                        new_memory_mb=new_mb,
                    )
                )
            for index, (csat, improved) in enumerate(answers):
                conn.execute(
                    insert(SATISFACTION_RESPONSE).values(
                        response_id=f"A-{external_id}-{index}",
                        account_id=number,
                        responded_at=NOON,
                        csat=csat,
                        performance_improved=improved,
                        comment="Cold starts are gone." if index == 0 else None,
                    )
                )


def _ids(loaded: HeraldConfig, db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return [c.external_id for c in story_candidates(conn, config=loaded, as_of=DAY)]


def test_candidates_are_migrated_measured_happy_and_consenting_best_first(db: Database) -> None:
    build_stories(db.engine)
    loaded = config()
    with db.engine.connect() as conn:
        found = story_candidates(conn, config=loaded, as_of=DAY)
    assert [c.external_id for c in found] == ["S1", "S3"]
    best = found[0]
    assert (best.latest.legacy_import_ms, best.latest.new_import_ms) == (2400.0, 20.0)
    assert best.latest.speedup == pytest.approx(120.0)
    assert best.latest.memory_saved == pytest.approx(1 - 1.5 / 512)
    assert (best.reports, best.responses, best.average_csat) == (2, 2, 4.5)
    assert (best.use_case, best.industry) == ("data pipelines", "logistics")
    assert best.contacts == ["ceo1@s.example", "tech1@s.example"]
    rows = list(csv.DictReader(io.StringIO(candidates_csv(found))))
    assert [(r["external_id"], r["import_speedup"], r["memory_saved_pct"]) for r in rows] == [
        ("S1", "120.00", "99.7"),
        ("S3", "60.00", "99.6"),
    ]
    # Before S1's latest report, its older one (10x) is its latest: still a candidate.
    with db.engine.connect() as conn:
        earlier = story_candidates(conn, config=loaded, as_of=date(2027, 5, 10))
    assert [(c.external_id, round(c.latest.speedup)) for c in earlier] == [
        ("S3", 60),
        ("S1", 10),
    ]


def test_without_a_consent_rule_consent_is_not_asked(db: Database) -> None:
    build_stories(db.engine)
    loaded = config()
    stories = loaded.campaign.report.stories.model_copy(update={"consent_attribute": None})
    report = loaded.campaign.report.model_copy(update={"stories": stories})
    open_config = replace(loaded, campaign=loaded.campaign.model_copy(update={"report": report}))
    assert _ids(open_config, db) == ["S2", "S1", "S3"]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_the_draft_quotes_the_accounts_own_figures(db: Database, tmp_path: Path) -> None:
    build_stories(db.engine)
    out = tmp_path / "s1.md"
    result = CliRunner().invoke(app, ["stories", "draft", "S1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "imports 120.00x faster" in result.output
    text = out.read_text(encoding="utf-8")
    for section in (
        "## Performance improvement: data pipelines",
        "## Developer experience",
        "## Maintenance and debugging",
        "## Scalability",
    ):
        assert section in text
    assert text.startswith("# Story S1: imports 120.00x faster on Acme Platform Modular")
    assert "> Cold starts are gone." in text
    # The measurements table holds exactly the account's performance reports.
    rows = re.findall(
        r"^\| (P-S1-\d) \| (\S+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+) \| ([\d.]+) \|",
        text,
        re.M,
    )
    with db.engine.connect() as conn:
        stored = conn.execute(
            select(
                PERFORMANCE_REPORT.c.report_id,
                PERFORMANCE_REPORT.c.legacy_import_ms,
                PERFORMANCE_REPORT.c.new_import_ms,
                PERFORMANCE_REPORT.c.legacy_memory_mb,
                PERFORMANCE_REPORT.c.new_memory_mb,
            )
            .where(PERFORMANCE_REPORT.c.report_id.like("P-S1-%"))
            .order_by(PERFORMANCE_REPORT.c.reported_at)
        ).all()
    assert [(r[0], float(r[2]), float(r[3]), float(r[5]), float(r[6])) for r in rows] == [
        tuple(row) for row in stored
    ]
    assert "ceo1@s.example" in text  # whom to interview


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("account", "reason"),
    [("S2", "has not consented"), ("NOPE", "no account"), ("S7-missing", "no account")],
)
def test_no_draft_without_consent_or_for_an_unknown_account(
    db: Database, tmp_path: Path, account: str, reason: str
) -> None:
    build_stories(db.engine)
    out = tmp_path / "draft.md"
    result = CliRunner().invoke(app, ["stories", "draft", account, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert reason in result.output and "Nothing was written" in result.output
    assert not out.exists()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_list_prints_the_candidates_and_writes_the_csv(db: Database, tmp_path: Path) -> None:
    build_stories(db.engine)
    target = tmp_path / "candidates.csv"
    result = CliRunner().invoke(
        app,
        ["stories", "list", "--as-of", DAY.isoformat(), "--csv", str(target)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "Case-study candidates as of 2027-06-01: 2" in result.output
    assert result.output.index("S1") < result.output.index("S3")
    with target.open(encoding="utf-8") as handle:
        assert [r["external_id"] for r in csv.DictReader(handle)] == ["S1", "S3"]
