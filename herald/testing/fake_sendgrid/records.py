"""What the fake keeps: each accepted recipient as SendGrid would deliver it (substitutions
and sections applied) and each request with what became of it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

RESET_STATUS: Final = 0
"""The :attr:`RequestLog.status` of a request answered by a connection reset."""


@dataclass(frozen=True)
class Accepted:
    """One ``to`` recipient of an accepted personalization, as SendGrid would deliver it."""

    email: str
    name: str | None
    subject: str | None
    text: str | None
    html: str | None
    custom_args: dict[str, Any]
    categories: list[str]
    message_id: str
    request_no: int
    asm_group_id: int | None
    sandbox: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # the body's, then its own

    def to_json(self) -> str:
        """One JSON line (the ``record_path`` format)."""
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Accepted:
        """The record that :meth:`to_json` wrote."""
        return cls(**json.loads(line))


@dataclass(frozen=True)
class RequestLog:
    """What became of one request (every request is logged, whatever its answer).

    ``status`` is the HTTP status answered, or :data:`RESET_STATUS` (0) when the connection
    was reset instead; ``valid`` means authenticated and valid (what faults apply to);
    ``errors`` holds the error messages answered (``"field: message"`` for a 400).
    """

    no: int
    status: int
    recipients: int
    bytes: int
    valid: bool
    errors: list[str]
    at: float  # when the request arrived (Unix time)

    def to_json(self) -> str:
        """One JSON line (the ``requests_path`` format)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> RequestLog:
        """The log line that :meth:`to_json` wrote."""
        return cls(**json.loads(line))


def load_requests(path: Path) -> list[RequestLog]:
    """The :class:`RequestLog` lines a fake appended to ``path`` (its ``requests_path``)."""
    with path.open(encoding="utf-8") as lines:
        return [RequestLog.from_json(line) for line in lines if line.strip()]


def busiest_second(requests: Iterable[RequestLog]) -> tuple[int, float]:
    """The most recipients that arrived within any one second (a sliding window over the
    requests' arrival times, every request counted whatever its answer), and when that
    second began: what a provider's per-second rate limit sees."""
    arrivals = sorted((r.at, r.recipients) for r in requests if r.recipients)
    best, start, window, left = 0, 0.0, 0, 0
    for at, count in arrivals:
        window += count
        while arrivals[left][0] <= at - 1.0:
            window -= arrivals[left][1]
            left += 1
        if window > best:
            best, start = window, arrivals[left][0]
    return best, start


def load_records(path: Path) -> list[Accepted]:
    """The :class:`Accepted` records a fake appended to ``path`` (its ``record_path``)."""
    with path.open(encoding="utf-8") as lines:
        return [Accepted.from_json(line) for line in lines if line.strip()]


def _substitute(text: str, values: Mapping[str, str]) -> str:
    """Each key of ``values`` replaced in ``text``, longer keys first, in a single pass."""
    keys = sorted((key for key in values if key), key=len, reverse=True)
    if not keys:
        return text
    pattern = re.compile("|".join(re.escape(key) for key in keys))
    return pattern.sub(lambda match: values[match.group(0)], text)


def accepted_records(
    body: dict[str, Any], message_id: str, request_no: int, *, expand: bool = True
) -> list[Accepted]:
    """The records of a valid, accepted body: one per ``to`` of each personalization.

    A substitution whose value names a key of the top-level ``sections`` stands for that
    section, itself with the personalization's substitutions applied (one level deep).
    With ``expand`` False (benchmarks) the subject and bodies are not rebuilt: None.
    """
    sections: dict[str, str] = body.get("sections") or {}
    bodies: dict[str, str] = {}
    for block in body.get("content") or []:
        bodies.setdefault(block["type"], block["value"])
    asm = body.get("asm")
    asm_group_id = asm.get("group_id") if isinstance(asm, dict) else None
    categories = list(body.get("categories") or [])
    records: list[Accepted] = []
    for personalization in body["personalizations"]:
        subject = text = html = None
        if expand:  # once per personalization, whatever its number of recipients
            own: dict[str, str] = personalization.get("substitutions") or {}
            values = {
                key: _substitute(sections[value], own) if value in sections else value
                for key, value in own.items()
            }

            def fill(template: str | None, values: dict[str, str] = values) -> str | None:
                return None if template is None else _substitute(template, values)

            subject = fill(personalization.get("subject", body.get("subject")))
            text, html = fill(bodies.get("text/plain")), fill(bodies.get("text/html"))
        records += [
            Accepted(
                email=to["email"],
                name=to.get("name"),
                subject=subject,
                text=text,
                html=html,
                custom_args=dict(personalization.get("custom_args") or {}),
                categories=list(categories),
                message_id=message_id,
                request_no=request_no,
                asm_group_id=asm_group_id,
                headers={**(body.get("headers") or {}), **(personalization.get("headers") or {})},
            )
            for to in personalization["to"]
        ]
    return records


def recipient_count(body: Any) -> int:
    """to + cc + bcc across the personalizations (0 for what is not a Mail Send body)."""
    if not isinstance(body, dict) or not isinstance(body.get("personalizations"), list):
        return 0
    return sum(
        len(p[kind])
        for p in body["personalizations"]
        if isinstance(p, dict)
        for kind in ("to", "cc", "bcc")
        if isinstance(p.get(kind), list)
    )


def is_sandbox(body: dict[str, Any]) -> bool:
    settings = body.get("mail_settings") or {}
    return bool((settings.get("sandbox_mode") or {}).get("enable"))
