"""Secrets and personal data: a whole phase, the webhook receiver and the weekly report run
with a SendGrid key, a webhook key and an unsubscribe key set; no key appears in any log
line, printed output, Prefect artifact, saved report, outbox file or audit entry, and
recipients' e-mail addresses appear in logs only masked."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from typer.testing import CliRunner

from flows.send_phase import send_phase
from flows.weekly_report import weekly_report
from herald.cli.app import app
from herald.privacy import mask_email
from herald.scaleout.rate import GlobalRate, ensure
from herald.settings import get_settings
from herald.telemetry.webhook import PATH
from herald.testing.fake_sendgrid import FakeSendGrid
from tests.support.bases import DAY, eligible, load_base
from tests.support.environment import Database
from tests.support.webhooks import NOW, Signer, client_for, event

pytestmark = pytest.mark.usefixtures("prefect_server")

API_KEY = "SG.sEcReT-api-key-7f3a9c1e5b"
UNSUBSCRIBE_SECRET = "uNsUbScRiBe-secret-4d2e8a"


def everything_written(root: Path) -> str:
    """Every file Herald wrote under var/ (reports, previews, outbox, rejects), as text."""
    parts = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


def artifacts() -> str:
    with get_client(sync_client=True) as client:
        return "\n".join(str(a.data) for a in client.read_artifacts())


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_no_key_anywhere_and_addresses_masked_in_logs(
    db: Database,
    tmp_path: Path,
    herald_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    signer = Signer()
    loaded = load_base(db, tmp_path, accounts=80)
    recipients = eligible(db, loaded, "announcement")
    rate = GlobalRate.of(loaded.campaign)  # requests take the config's rate from Prefect
    assert rate is not None
    ensure(rate)
    with FakeSendGrid(api_key=API_KEY, seed=2) as fake:
        fake.script("500", "429")  # retries are logged: their lines must be clean too
        monkeypatch.setenv("HERALD_TRANSPORT", "sendgrid")
        monkeypatch.setenv("HERALD_SENDGRID_API_HOST", fake.url)
        monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
        monkeypatch.setenv("HERALD_WEBHOOK_PUBLIC_KEY", signer.public)
        monkeypatch.setenv("HERALD_UNSUBSCRIBE_SECRET", UNSUBSCRIBE_SECRET)
        get_settings.cache_clear()

        runner = CliRunner()
        printed = [
            runner.invoke(app, ["settings"]).output,
            runner.invoke(app, ["phase", "send", "announcement", "--as-of", str(DAY)]).output,
        ]
        dry = send_phase(phase="announcement", as_of=DAY)
        summary = send_phase(phase="announcement", as_of=DAY, send=True, window=False)
        assert summary.delivery.accepted == len(recipients)
        # A revoked key: the 401 and its handling are logged, the key is not.
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.revoked-" + API_KEY[3:])
        get_settings.cache_clear()
        printed.append(
            runner.invoke(app, ["report", "weekly", "--as-of", str(DAY), "--send"]).output
        )
        monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
        get_settings.cache_clear()
        weekly_report(as_of=DAY, send=True)

    body = json.dumps([event("bounce", sorted(recipients)[0], 1)]).encode()
    with client_for(db, signer.public, clock=NOW + 10) as client:
        assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 200
        forged = client.post(PATH, content=body + b" ", headers=signer.headers(body))
        assert forged.status_code == 403

    out, err = capfd.readouterr()
    logs = "\n".join(record.getMessage() for record in caplog.records)
    with db.engine.connect() as conn:
        audit = "\n".join(str(row) for row in conn.exec_driver_sql("SELECT * FROM audit_log").all())
    places = {
        "log records": logs,
        "printed": "\n".join(printed) + out + err,
        "artifacts": artifacts(),
        "var/ files": everything_written(herald_env),
        "audit log": audit,
    }
    for place, text in places.items():
        assert API_KEY not in text and API_KEY[3:] not in text, place
        assert signer.public not in text and signer.public[20:60] not in text, place
        assert UNSUBSCRIBE_SECRET not in text, place
    assert "set (hidden)" in printed[0]
    # Recipients' addresses: never whole in a log line or an artifact; where one is named
    # (the dry run's sample renders), it is masked, j***@domain.
    assert not [email for email in recipients if email in logs or email in places["artifacts"]]
    named = [sample["contact"] for sample in dry.samples]
    assert named and set(named) <= {mask_email(email) for email in recipients}
    assert len(caplog.records) > 50  # the runs did log: the check above is not vacuous
