"""The segmentation flow on a real (ephemeral) Prefect server."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

from flows.segment_customers import segment_customers
from herald.config import ConfigError
from herald.customers.importer import import_customers
from herald.sandbox.demo import write_demo_base
from tests.support.environment import Database

DAY = date(2026, 11, 24)

pytestmark = pytest.mark.usefixtures("prefect_server")


def load_demo(db: Database, tmp_path: Path, accounts: int = 300) -> None:
    files = write_demo_base(tmp_path / "demo", accounts=accounts, seed=3)
    import_customers(
        engine=db.engine,
        accounts_csv=files.accounts_csv,
        contacts_csv=files.contacts_csv,
        rejects_dir=tmp_path / "rejects",
    )


class TestSegmentFlow:
    def test_flow_assigns_every_active_account_and_publishes_the_matrix(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Counts add up to the active accounts; the CSV and the table artifact hold the matrix."""
        load_demo(db, tmp_path)
        summary = segment_customers(as_of=DAY, output_dir=tmp_path / "out")

        active = db.count("account WHERE lifecycle = 'active'")
        assert sum(summary.by_segment.values()) == summary.active_accounts == active
        assert db.count("segment_assignment") == active
        with summary.matrix_csv.open() as handle:
            total = [row for row in csv.DictReader(handle) if row["segment"] == "total"]
        assert int(total[0]["total"]) == active
        artifact = Artifact.get("rollout-priority-matrix")
        assert artifact is not None
        assert str(DAY) in (artifact.description or "")
        assert f'"total": {active}' in str(artifact.data)

    def test_bad_config_fails_the_flow_before_any_assignment(
        self, db: Database, tmp_path: Path, config_dir: Path
    ) -> None:
        """With a typo in segments.yaml the flow fails in load-config and writes nothing."""
        load_demo(db, tmp_path, accounts=20)
        path = config_dir / "segments.yaml"
        path.write_text(path.read_text().replace("{field: industry, in:", "{field: industy, in:"))

        with pytest.raises(ConfigError, match=r"rules\[2\]\.when\.field"):
            segment_customers(as_of=DAY, output_dir=tmp_path / "out")
        assert db.count("segment_assignment") == 0
        assert not (tmp_path / "out").exists()
