"""The fake SendGrid server, driven by the official client: what it accepts, refuses and records.

Every test talks HTTP to a real :class:`FakeSendGrid` on 127.0.0.1 through the official
``sendgrid`` client (python_http_client over urllib), so the fake is proven to speak what the
client speaks; the offline validator is checked rule by rule.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import URLError

import pytest
import sendgrid
from python_http_client.exceptions import (
    BadRequestsError,
    HTTPError,
    InternalServerError,
    PayloadTooLargeError,
    TooManyRequestsError,
    UnauthorizedError,
)
from sendgrid.helpers.mail import (
    Asm,
    Category,
    Content,
    CustomArg,
    From,
    GroupId,
    Mail,
    MailSettings,
    Personalization,
    SandBoxMode,
    Section,
    Substitution,
    To,
)

from herald.testing.fake_sendgrid import (
    RESET_STATUS,
    SCHEMA_FILE,
    Accepted,
    FakeSendGrid,
    Faults,
    load_records,
    mail_send_violations,
)
from tests.support.environment import ROOT

KEY = "SG.fake-key"
WAIT = 120  # seconds: only a safety net against hanging, never what a test relies on
SHARED_SPEC = Path("/work/shared/specs/sendgrid-mail-v3.openapi.json")
# SHA-256 of SendGrid's official Mail Send OpenAPI document as given in ../shared/specs.
OFFICIAL_SCHEMA_SHA256 = "4ba24d0feb8a6b347f60528161d1cf0e7591987d2b3a64a6533685dc2b39d19f"


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        yield server
    assert server.internal_errors == []


def client(fake: FakeSendGrid, key: str = KEY, timeout: float = WAIT) -> Any:
    """The official client, pointed at the fake."""
    sg = sendgrid.SendGridAPIClient(api_key=key, host=fake.url)
    sg.client.timeout = timeout
    return sg


def post(fake: FakeSendGrid, body: dict[str, Any], key: str = KEY) -> Any:
    """A raw body through the official client (``client.mail.send.post``)."""
    return client(fake, key).client.mail.send.post(request_body=body)


def minimal(email: str = "ada@example.com", **extra: Any) -> dict[str, Any]:
    """The smallest valid Mail Send body."""
    return {
        "personalizations": [{"to": [{"email": email}]}],
        "from": {"email": "rollouts@example.com"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hi"}],
        **extra,
    }


def campaign_mail(people: list[tuple[str, str, int]], *, sandbox: bool = False) -> Mail:
    """A mail the way Herald builds one: one section pair per variant, substitutions per person.

    ``people`` holds (email, first name, variant index).
    """
    mail = Mail()
    mail.from_email = From("rollouts@example.com", "Rollouts")
    for index, greeting in enumerate(["Hello", "Bonjour"]):
        mail.add_section(Section(f"-section_{index}_html-", f"<p>{greeting} -first_html-</p>"))
        mail.add_section(Section(f"-section_{index}_text-", f"{greeting} -first_text-"))
    mail.add_content(Content("text/plain", "-body_text-\n-- -email_text-"))
    mail.add_content(Content("text/html", "-body_html-<hr>-email_html-"))
    for email, first, variant in people:
        personalization = Personalization()
        personalization.add_to(To(email, f"{first} Lovelace"))
        personalization.subject = "News for -first_text-"
        values = {
            "-body_html-": f"-section_{variant}_html-",
            "-body_text-": f"-section_{variant}_text-",
            "-first_html-": first.replace("&", "&amp;").replace("<", "&lt;"),
            "-first_text-": first,
            "-email_html-": email,
            "-email_text-": email,
        }
        for key, value in values.items():
            personalization.add_substitution(Substitution(key, value))
        personalization.add_custom_arg(CustomArg("herald_key", f"c/m/{email}"))
        mail.add_personalization(personalization, index=len(mail.personalizations or []))
    mail.add_category(Category("rollout"))
    mail.asm = Asm(GroupId(42))
    if sandbox:
        mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
    return mail


# --------------------------------------------------------------------------- accepted


class TestAccepted:
    def test_202_records_each_recipient_as_delivered(self, fake: FakeSendGrid) -> None:
        """Sections and substitutions are expanded per recipient, in the subject, text and HTML."""
        people = [("ada@example.com", "Ada", 0), ("Rene@Example.com", "René <&>", 1)]
        response = client(fake).send(campaign_mail(people))

        assert response.status_code == 202
        assert response.body == b""
        message_id = response.headers["X-Message-Id"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", message_id)
        ada, rene = fake.accepted
        assert ada == Accepted(
            email="ada@example.com",
            name="Ada Lovelace",
            subject="News for Ada",
            text="Hello Ada\n-- ada@example.com",
            html="<p>Hello Ada</p><hr>ada@example.com",
            custom_args={"herald_key": "c/m/ada@example.com"},
            categories=["rollout"],
            message_id=message_id,
            request_no=1,
            asm_group_id=42,
            sandbox=False,
        )
        assert rene.subject == "News for René <&>"
        assert rene.text == "Bonjour René <&>\n-- Rene@Example.com"
        assert rene.html == "<p>Bonjour René &lt;&amp;></p><hr>Rene@Example.com"
        assert fake.accepted_emails() == Counter({"ada@example.com": 1, "rene@example.com": 1})
        (log,) = fake.requests
        assert (log.no, log.status, log.recipients, log.valid, log.errors) == (1, 202, 2, True, [])
        assert log.bytes > 0

    def test_longer_keys_first_and_values_are_not_substituted_again(
        self, fake: FakeSendGrid
    ) -> None:
        body = minimal(
            content=[{"type": "text/plain", "value": "-name- -name-full- -sec-"}],
            sections={"-s-": "[-name-]"},
        )
        body["personalizations"][0]["substitutions"] = {
            "-name-": "-name-full-",  # inserted text is not scanned again
            "-name-full-": "Ada Lovelace",
            "-sec-": "-s-",
        }
        assert post(fake, body).status_code == 202
        assert fake.accepted[0].text == "-name-full- Ada Lovelace [-name-full-]"

    def test_cc_and_bcc_are_counted_but_only_to_is_recorded(self, fake: FakeSendGrid) -> None:
        body = minimal()
        body["personalizations"][0]["cc"] = [{"email": "cc@example.com"}]
        body["personalizations"][0]["bcc"] = [{"email": "bcc@example.com"}]
        post(fake, body)
        assert [record.email for record in fake.accepted] == ["ada@example.com"]
        assert fake.requests[0].recipients == 3

    def test_sandbox_answers_200_and_records_nothing(self, fake: FakeSendGrid) -> None:
        response = client(fake).send(campaign_mail([("ada@example.com", "Ada", 0)], sandbox=True))
        assert response.status_code == 200
        assert "X-Message-Id" not in response.headers
        assert fake.accepted == []
        assert fake.request_count() == fake.request_count(200) == 1

    def test_concurrent_clients_are_all_recorded_once(self, fake: FakeSendGrid) -> None:
        statuses: list[int] = []

        def send(worker: int) -> None:
            for number in range(5):
                response = post(fake, minimal(f"w{worker}-{number}@example.com"))
                statuses.append(response.status_code)

        threads = [threading.Thread(target=send, args=(worker,)) for worker in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [202] * 60
        assert sorted(record.request_no for record in fake.accepted) == list(range(1, 61))
        assert len(fake.accepted_emails()) == 60
        assert [log.no for log in fake.requests] == list(range(1, 61))

    def test_keep_alive_connection_serves_several_requests(self, fake: FakeSendGrid) -> None:
        """HTTP/1.1 clients that keep the connection open are served too."""
        connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=WAIT)
        try:
            headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
            for email in ("a@example.com", "b@example.com"):
                connection.request("POST", "/v3/mail/send", json.dumps(minimal(email)), headers)
                response = connection.getresponse()
                assert (response.status, response.read()) == (202, b"")
        finally:
            connection.close()
        assert fake.accepted_emails() == Counter({"a@example.com": 1, "b@example.com": 1})

    def test_latency_delays_the_answer(self) -> None:
        """No answer comes before the latency (a lower bound only: a busy machine is slower)."""
        with FakeSendGrid(api_key=KEY, latency=0.2, jitter=0.05, seed=1) as fake:
            started = time.monotonic()
            post(fake, minimal())
            assert time.monotonic() - started >= 0.2


# --------------------------------------------------------------------------- refused


class TestRefused:
    def test_bad_key_is_401_and_records_nothing(self, fake: FakeSendGrid) -> None:
        with pytest.raises(UnauthorizedError) as caught:
            client(fake, key="SG.wrong").send(campaign_mail([("ada@example.com", "Ada", 0)]))
        assert caught.value.status_code == 401
        assert json.loads(caught.value.body) == {
            "errors": [
                {
                    "message": "The provided authorization grant is invalid, expired, or revoked",
                    "field": None,
                    "help": None,
                }
            ]
        }
        assert fake.accepted == []
        assert [(log.status, log.valid) for log in fake.requests] == [(401, False)]

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            (lambda b: b["personalizations"][0]["to"][0].update(email="not-an-address"),
             "personalizations.0.to.0.email"),
            (lambda b: b.update(subject=""), "subject"),
            (lambda b: b.update(personalizations=b["personalizations"] * 1001),
             "personalizations"),
            (lambda b: b.pop("from"), "from"),
        ],
        ids=["bad-email", "empty-subject", "1001-personalizations", "no-from"],
    )  # fmt: skip
    def test_schema_violation_is_400_with_its_field(
        self, fake: FakeSendGrid, change: Any, field: str
    ) -> None:
        body = minimal()
        change(body)
        with pytest.raises(BadRequestsError) as caught:
            post(fake, body)
        errors = json.loads(caught.value.body)["errors"]
        assert field in [error["field"] for error in errors]
        assert all(set(error) == {"message", "field", "help"} for error in errors)
        assert all(error["help"] is None and error["message"] for error in errors)
        assert fake.accepted == []
        (log,) = fake.requests
        assert (log.status, log.valid) == (400, False)
        assert any(error.startswith(f"{field}: ") for error in log.errors)

    def test_a_benchmark_fake_checks_one_request_in_n(self) -> None:
        """With ``validate_every=3`` (benchmarks only) the 1st and 4th requests are checked
        against the schema and a bad one refused; the 2nd and 3rd are not checked."""
        bad = minimal()
        bad["personalizations"][0]["to"] = [{"email": "x"}]
        with FakeSendGrid(api_key=KEY, validate_every=3) as sampled:
            with pytest.raises(BadRequestsError):
                post(sampled, bad)
            assert post(sampled, minimal()).status_code == 202
            assert post(sampled, minimal("bea@example.com")).status_code == 202
            with pytest.raises(BadRequestsError):
                post(sampled, bad)
            assert [log.status for log in sampled.requests] == [400, 202, 202, 400]

    def test_one_error_per_violation(self, fake: FakeSendGrid) -> None:
        body = minimal()
        body["personalizations"][0]["to"] = [{"email": "x"}, {"email": "y", "name": 7}]
        with pytest.raises(BadRequestsError) as caught:
            post(fake, body)
        fields = [error["field"] for error in json.loads(caught.value.body)["errors"]]
        assert sorted(fields) == [
            "personalizations.0.to.0.email",
            "personalizations.0.to.1.email",
            "personalizations.0.to.1.name",
        ]

    def test_not_json_is_400_bad_request(self, fake: FakeSendGrid) -> None:
        with pytest.raises(BadRequestsError) as caught:
            client(fake).client.mail.send.post(
                request_body="{not json",
                request_headers={"Content-Type": "application/json; charset=utf-8"},
            )
        assert json.loads(caught.value.body) == {
            "errors": [{"message": "Bad Request", "field": None, "help": None}]
        }

    def test_another_media_type_is_415(self, fake: FakeSendGrid) -> None:
        """SendGrid refuses a body that is not declared JSON (a charset parameter is fine:
        Herald sends "application/json; charset=utf-8", its own serialized body)."""
        with pytest.raises(HTTPError) as caught:
            client(fake).client.mail.send.post(
                request_body=json.dumps(minimal()), request_headers={"Content-Type": "text/plain"}
            )
        assert caught.value.status_code == 415
        assert json.loads(caught.value.body)["errors"][0]["message"] == (
            "Content-Type should be application/json."
        )
        assert not fake.accepted

    def test_body_over_the_limit_is_413(self) -> None:
        with FakeSendGrid(api_key=KEY, max_body_bytes=4096) as fake:
            body = minimal(content=[{"type": "text/plain", "value": "x" * 2_000_000}])
            with pytest.raises(PayloadTooLargeError) as caught:
                post(fake, body)
            assert caught.value.status_code == 413
            assert json.loads(caught.value.body)["errors"][0]["message"]
            assert post(fake, minimal()).status_code == 202  # small ones still pass
            assert [log.status for log in fake.requests] == [413, 202]

    def test_other_paths_404_and_methods_405(self, fake: FakeSendGrid) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=WAIT)
        headers = {"Authorization": f"Bearer {KEY}"}
        try:
            connection.request("POST", "/v3/mail/batch", b"{}", headers)
            response = connection.getresponse()
            assert response.status == 404
            assert json.loads(response.read())["errors"][0]["field"] is None
            connection.request("GET", "/v3/mail/send", headers=headers)
            response = connection.getresponse()
            response.read()
            assert (response.status, response.headers["Allow"]) == (405, "POST")
        finally:
            connection.close()
        assert [log.status for log in fake.requests] == [404, 405]


class TestValidationOffline:
    def test_a_valid_body_has_no_errors(self, fake: FakeSendGrid) -> None:
        assert fake.schema_errors(minimal()) == []
        assert fake.schema_errors(campaign_mail([("a@example.com", "A", 1)]).get()) == []

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            (lambda b: b.update(personalizations=[]), "personalizations"),
            (lambda b: b["personalizations"][0].update(to=[]), "personalizations.0.to"),
            (lambda b: b["personalizations"][0].pop("to"), "personalizations.0.to"),
            (lambda b: b.pop("subject"), "subject"),
            (lambda b: b.pop("content"), "content"),
            (lambda b: b.update(content=[]), "content"),
            (lambda b: b.update(content=[{"type": "text/html", "value": "<p>"},
                                         {"type": "text/plain", "value": "p"}]), "content"),
            (lambda b: b["personalizations"][0].update(
                to=[{"email": f"r{i}@example.com"} for i in range(600)],
                bcc=[{"email": f"b{i}@example.com"} for i in range(401)]), "personalizations"),
            (lambda b: b["personalizations"][0].update(
                substitutions={"-k-": "v" * 10_000}), "personalizations.0.substitutions"),
            (lambda b: b["personalizations"][0].update(
                custom_args={"k": "v" * 10_000}), "personalizations.0.custom_args"),
            (lambda b: b["personalizations"][0].update(cc=[{"email": "ADA@example.com"}]),
             "personalizations.0.cc.0.email"),
            (lambda b: b.update(sections={"-s-": 1}), "sections"),
            (lambda b: b.update(categories=["a"] * 2), "categories"),
        ],
        ids=[
            "no-personalization", "empty-to", "missing-to", "no-subject", "no-content",
            "empty-content", "html-before-text", "1001-recipients", "big-substitutions",
            "big-custom-args", "duplicate-address", "bad-sections", "duplicate-category",
        ],
    )  # fmt: skip
    def test_each_rule_names_its_field(self, change: Any, field: str) -> None:
        body = minimal()
        change(body)
        assert field in [violation.field for violation in mail_send_violations(body)]

    def test_subject_may_come_from_every_personalization_or_a_template(self) -> None:
        body = minimal()
        del body["subject"]
        body["personalizations"][0]["subject"] = "Per person"
        assert mail_send_violations(body) == []
        del body["personalizations"][0]["subject"], body["content"]
        body["template_id"] = "d-123"
        assert mail_send_violations(body) == []

    def test_the_limits_themselves_pass(self) -> None:
        body = minimal()
        body["personalizations"] = [
            {"to": [{"email": f"r{i}@example.com"}], "custom_args": {"k": "v" * 9_980}}
            for i in range(1000)
        ]
        assert mail_send_violations(body) == []

    def test_schema_is_vendored_verbatim(self) -> None:
        """The vendored copy is byte for byte the official document (pinned by its SHA-256,
        so the check holds on a machine without the shared specs; compared too where the
        shared copy is present)."""
        assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == OFFICIAL_SCHEMA_SHA256
        if SHARED_SPEC.exists():
            assert SCHEMA_FILE.read_bytes() == SHARED_SPEC.read_bytes()


# --------------------------------------------------------------------------- faults


class TestFaults:
    def test_scripted_429_carries_a_future_reset(self, fake: FakeSendGrid) -> None:
        """The reset lies ``reset_after`` beyond the moment the request was sent (compared
        with that moment, not with the clock once the answer is read: a slow machine)."""
        fake.script("429")
        sent_at = time.time()
        with pytest.raises(TooManyRequestsError) as caught:
            post(fake, minimal())
        headers = caught.value.headers
        assert headers["X-RateLimit-Remaining"] == "0"
        assert int(headers["X-RateLimit-Limit"]) > 0
        assert int(headers["X-RateLimit-Reset"]) >= sent_at + fake.faults.reset_after
        assert fake.accepted == []
        assert post(fake, minimal()).status_code == 202  # the script is used up
        assert [log.status for log in fake.requests] == [429, 202]

    def test_scripted_500(self, fake: FakeSendGrid) -> None:
        fake.script("500", "accept")
        with pytest.raises(InternalServerError) as caught:
            post(fake, minimal())
        assert json.loads(caught.value.body)["errors"][0]["message"]
        assert fake.accepted == []
        assert post(fake, minimal()).status_code == 202
        assert fake.scripted == 0

    def test_scripted_reset_is_recorded_but_unanswered(self, fake: FakeSendGrid) -> None:
        """The client sees the connection drop (not a URLError): SendGrid may have sent it."""
        fake.script("reset")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)) as caught:
            post(fake, minimal())
        assert not isinstance(caught.value, URLError | HTTPError)
        assert [record.email for record in fake.accepted] == ["ada@example.com"]
        assert fake.request_count(RESET_STATUS) == 1
        assert fake.requests[0].valid

    def test_faults_only_hit_valid_authenticated_requests(self, fake: FakeSendGrid) -> None:
        fake.script("429")
        with pytest.raises(UnauthorizedError):
            post(fake, minimal(), key="SG.wrong")
        with pytest.raises(BadRequestsError):
            post(fake, minimal("not-an-address"))
        with pytest.raises(TooManyRequestsError):
            post(fake, minimal())
        assert [log.status for log in fake.requests] == [401, 400, 429]

    def test_scripted_slow_answer_and_stop_does_not_wait_for_it(self) -> None:
        """A slow answer comes after its delay; stop() hangs up on one still waiting (an hour
        long) at once: the client sees the connection drop, the log says it was reset."""
        fake = FakeSendGrid(api_key=KEY).start()
        try:
            fake.script("slow:0.3", "slow:3600")
            started = time.monotonic()
            assert post(fake, minimal()).status_code == 202
            assert time.monotonic() - started >= 0.3

            failures: list[BaseException] = []

            def slow() -> None:
                try:
                    post(fake, minimal())
                except (OSError, http.client.HTTPException) as error:
                    failures.append(error)

            thread = threading.Thread(target=slow)
            thread.start()
            assert fake.wait_received(2, timeout=WAIT)
            assert fake.request_count() == 1  # the slow one is still waiting
        finally:
            started = time.monotonic()
            fake.stop()
        thread.join(WAIT)
        assert time.monotonic() - started < WAIT  # far from the hour the answer would take
        assert not thread.is_alive()
        assert fake.wait_idle(timeout=WAIT)  # the hung-up request is logged
        assert len(failures) == 1
        assert isinstance(failures[0], http.client.RemoteDisconnected | ConnectionResetError)
        assert [log.status for log in fake.requests] == [202, RESET_STATUS]
        assert fake.internal_errors == []

    @staticmethod
    def _half_sent(fake: FakeSendGrid) -> socket.socket:
        """A connection that has sent a request's headers and half of its body."""
        body = json.dumps(minimal()).encode()
        host, port = fake.url.removeprefix("http://").split(":")
        connection = socket.create_connection((host, int(port)), timeout=WAIT)
        head = (
            f"POST /v3/mail/send HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        connection.sendall(head.encode() + body[: len(body) // 2])
        assert fake.wait_received(1, timeout=WAIT)
        return connection

    def test_a_client_that_hangs_up_mid_body_is_answered_bad_request(self) -> None:
        """The client cut its own body short: a 400 in the log (nobody is left to read it)."""
        with FakeSendGrid(api_key=KEY) as fake:
            self._half_sent(fake).close()
            assert fake.wait_idle(timeout=WAIT)
            assert [(log.status, log.errors) for log in fake.requests] == [(400, ["Bad Request"])]

    def test_a_body_still_coming_when_the_fake_stops_is_a_reset(self) -> None:
        """stop() hangs up on a request whose body has not all come: a reset, as on one
        waiting for its answer, never a 400 the client did not cause."""
        fake = FakeSendGrid(api_key=KEY).start()
        connection = self._half_sent(fake)
        try:
            fake.stop()
            assert fake.wait_idle(timeout=WAIT)
            assert [(log.status, log.errors) for log in fake.requests] == [
                (RESET_STATUS, ["stopped"])
            ]
            assert fake.internal_errors == []
        finally:
            connection.close()

    def test_unknown_outcomes_and_rates_are_refused(self, fake: FakeSendGrid) -> None:
        with pytest.raises(ValueError, match=r"unknown scripted outcome.*'hold'"):
            fake.script("accept", "418")
        assert fake.scripted == 0
        with pytest.raises(ValueError, match="add up"):
            Faults(rate_limited=0.6, server_error=0.6)

    def test_random_faults_follow_their_rates_and_the_seed(self) -> None:
        faults = Faults(rate_limited=0.2, server_error=0.1, reset_after_accept=0.1)

        def run() -> list[int]:
            with FakeSendGrid(api_key=KEY, faults=faults, seed=7) as fake:
                sg = client(fake)
                for _ in range(200):
                    with contextlib.suppress(HTTPError, ConnectionResetError):
                        sg.client.mail.send.post(request_body=minimal())
                assert len(fake.accepted) == fake.request_count(202) + fake.request_count(0)
                return [log.status for log in fake.requests]

        statuses = run()
        counts = Counter(statuses)
        assert set(counts) <= {202, 429, 500, RESET_STATUS}
        assert 25 <= counts[429] <= 55
        assert 8 <= counts[500] <= 32
        assert 8 <= counts[RESET_STATUS] <= 32
        assert run() == statuses  # the same seed, the same faults


# --------------------------------------------------------------------------- synchronisation


class Poster:
    """Requests posted from threads of their own, so the test can hold them at the fake."""

    def __init__(self, fake: FakeSendGrid) -> None:
        self.fake = fake
        self.statuses: list[int] = []
        self.failures: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def post(self, email: str, key: str = KEY) -> None:
        def send() -> None:
            try:
                self.statuses.append(post(self.fake, minimal(email), key=key).status_code)
            except (OSError, HTTPError, http.client.HTTPException) as error:
                self.failures.append(error)

        thread = threading.Thread(target=send)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(WAIT)
        assert not any(thread.is_alive() for thread in self.threads), "a request never ended"


class TestSynchronisation:
    def test_gather_holds_each_request_until_all_have_arrived(self, fake: FakeSendGrid) -> None:
        """Two of three gathered requests stay unanswered until the third arrives; then all
        three are answered, and the next request is not held."""
        gathering = fake.gather(3)
        clients = Poster(fake)
        clients.post("a@example.com")
        clients.post("b@example.com")
        assert fake.wait_received(2, timeout=WAIT)
        assert not gathering.met
        assert fake.request_count() == 0  # both held, neither answered

        clients.post("c@example.com")
        assert gathering.wait(timeout=WAIT)
        clients.join()
        assert sorted(clients.statuses) == [202, 202, 202] and clients.failures == []
        assert sorted(gathering.request_nos) == [1, 2, 3]
        assert post(fake, minimal("d@example.com")).status_code == 202  # used up
        assert len(fake.accepted_emails()) == 4

    def test_gatherings_take_the_following_requests_in_order(self, fake: FakeSendGrid) -> None:
        """A second gathering waits for requests of its own once the first is met."""
        first, second = fake.gather(1), fake.gather(2)
        assert post(fake, minimal("a@example.com")).status_code == 202
        assert first.met and first.request_nos == [1]
        clients = Poster(fake)
        clients.post("b@example.com")
        assert fake.wait_received(2, timeout=WAIT)
        assert not second.met and fake.request_count() == 1
        clients.post("c@example.com")
        clients.join()
        assert second.met and sorted(second.request_nos) == [2, 3]

    def test_only_valid_requests_are_gathered(self, fake: FakeSendGrid) -> None:
        """A refused request (a bad key) is answered at once and does not join a gathering."""
        gathering = fake.gather(1)
        with pytest.raises(UnauthorizedError):
            post(fake, minimal(), key="SG.wrong")
        assert gathering.request_nos == []
        assert post(fake, minimal()).status_code == 202
        assert gathering.met

    def test_a_gathering_gives_up_after_its_safety_timeout(self, fake: FakeSendGrid) -> None:
        """A request never joined by the others is answered once the timeout runs out."""
        gathering = fake.gather(2, timeout=0.2)
        assert post(fake, minimal()).status_code == 202
        assert not gathering.met and not gathering.wait(timeout=0)
        assert gathering.request_nos == [1]
        with pytest.raises(ValueError, match="at least one"):
            fake.gather(0)

    def test_a_held_request_waits_for_release_then_is_accepted(self, fake: FakeSendGrid) -> None:
        """ "hold" keeps the request unanswered and unrecorded until release()."""
        fake.script("hold")
        clients = Poster(fake)
        clients.post("ada@example.com")
        assert fake.wait_held(1, timeout=WAIT)
        assert fake.held == [1]
        assert fake.request_count() == 0 and fake.accepted == []

        assert fake.release() == 1
        clients.join()
        assert clients.statuses == [202]
        assert fake.held == [] and fake.accepted_emails() == Counter({"ada@example.com": 1})
        assert fake.release() == 0  # nothing left to let go

    def test_release_a_count_lets_go_of_the_requests_held_longest(self, fake: FakeSendGrid) -> None:
        """release(1) answers the first request held; the other stays held."""
        fake.script("hold")
        clients = Poster(fake)
        clients.post("first@example.com")
        assert fake.wait_held(1, timeout=WAIT)
        fake.script("hold")
        clients.post("second@example.com")
        assert fake.wait_held(2, timeout=WAIT)

        assert fake.release(1) == 1
        assert fake.held == [2]
        clients.threads[0].join(WAIT)  # answered, so recorded
        assert [record.email for record in fake.accepted] == ["first@example.com"]
        assert fake.release() == 1
        clients.join()
        assert clients.statuses == [202, 202]
        assert [record.email for record in fake.accepted] == [
            "first@example.com",
            "second@example.com",
        ]

    def test_wait_held_says_false_when_nothing_is_held(self, fake: FakeSendGrid) -> None:
        """wait_held times out with False (not an exception) when no request is held."""
        assert post(fake, minimal()).status_code == 202
        assert not fake.wait_held(1, timeout=0.05)

    def test_wait_idle_waits_until_the_request_is_answered_and_logged(
        self, fake: FakeSendGrid
    ) -> None:
        """A held request keeps the fake busy; once released, wait_idle returns with it logged."""
        fake.script("hold")
        clients = Poster(fake)
        clients.post("ada@example.com")
        assert fake.wait_held(1, timeout=WAIT)
        assert not fake.wait_idle(timeout=0.05)  # held: not answered, so not idle

        fake.release()
        assert fake.wait_idle(timeout=WAIT)
        assert [log.status for log in fake.requests] == [202]  # before the client is joined
        assert [record.email for record in fake.accepted] == ["ada@example.com"]
        clients.join()

    def test_wait_idle_disconnected_waits_for_clients_to_hang_up(self, fake: FakeSendGrid) -> None:
        """An open keep-alive connection is idle but connected until the client closes it."""
        connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=WAIT)
        try:
            headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
            connection.request("POST", "/v3/mail/send", json.dumps(minimal()), headers)
            response = connection.getresponse()
            assert (response.status, response.read()) == (202, b"")
            assert fake.wait_idle(timeout=WAIT)
            assert not fake.wait_idle(timeout=0.05, disconnected=True)
        finally:
            connection.close()
        assert fake.wait_idle(timeout=WAIT, disconnected=True)

    def test_stop_lets_held_and_gathered_requests_go_unanswered(self) -> None:
        """stop() never hangs on a held or gathered request: both clients see the connection
        drop, both requests are logged as reset, and the gathering is not met."""
        fake = FakeSendGrid(api_key=KEY).start()
        clients = Poster(fake)
        try:
            fake.script("hold")
            clients.post("held@example.com")
            assert fake.wait_held(1, timeout=WAIT)
            gathering = fake.gather(2)
            clients.post("gathered@example.com")
            assert fake.wait_received(2, timeout=WAIT)
        finally:
            fake.stop()
        clients.join()
        assert fake.wait_idle(timeout=WAIT)
        assert not gathering.met and not gathering.wait(timeout=0)
        assert fake.held == []
        assert clients.statuses == [] and len(clients.failures) == 2
        assert [(log.status, log.errors) for log in fake.requests] == [
            (RESET_STATUS, ["stopped"]),
            (RESET_STATUS, ["stopped"]),
        ]
        assert fake.accepted == [] and fake.internal_errors == []


# --------------------------------------------------------------------------- persistence


def test_record_path_holds_one_json_line_per_recipient(tmp_path: Path) -> None:
    path = tmp_path / "accepted.jsonl"
    with FakeSendGrid(api_key=KEY, record_path=path) as fake:
        people = [("ada@example.com", "Ada", 0), ("bob@example.com", "Bob", 1)]
        client(fake).send(campaign_mail(people))
        post(fake, minimal("cy@example.com"))
        # Written as each request is accepted, not at stop().
        assert load_records(path) == fake.accepted
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["email"] for line in lines] == [
        "ada@example.com",
        "bob@example.com",
        "cy@example.com",
    ]


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "accepted.jsonl"
    command = [sys.executable, "-m", "herald.testing.fake_sendgrid", "--port", "0"]
    command += ["--api-key", KEY, "--latency", "0.01", "--record", str(path), "--seed", "3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
            assert match, line
            sg = sendgrid.SendGridAPIClient(api_key=KEY, host=match.group(1))
            sg.client.timeout = WAIT
            assert sg.client.mail.send.post(request_body=minimal()).status_code == 202
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=WAIT)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, err
    assert err == ""
    assert "stopped after 1 requests, 1 recipients accepted" in out
    assert [record.email for record in load_records(path)] == ["ada@example.com"]
