"""Proof sends: a phase's message, one per chosen variant, to seed addresses, never to customers.

A proof is rendered and sent the way the real send would do it (the same templates, checked
first; the same transport, headers, ``Content-Language`` and unsubscribe link), with three
differences that keep it out of the campaign:

- **No ledger.** Nothing is written to ``delivery``, ``send_batch`` or ``send_worker``; one
  audit-log entry (``phase.proof``) says who sent which variants to how many seeds (the
  addresses masked).
- **No ledger key.** Each recipient's key is ``proof:<proof id>``, which is not a ledger
  key (:meth:`LedgerKey.parse`), so the events SendGrid reports for a proof match no ledger
  row: they are stored without a delivery and count in no metric (a bounce or spam report
  of a seed still suppresses that seed's address, as for any address). The outbox writes
  the proof's files to ``<var>/proofs/<campaign>/<proof id>/``, apart from the campaign's.
- **Subject marked** with :data:`PROOF_MARK`.

Per-recipient values come from a *stand-in*: the first contact (lowest id) of the phase's
audience in the variant's segment and role, of the variant's locale when there is one, else
of any locale; without one (or with ``placeholders``) from placeholder values. The address
in the body is the seed's. The unsubscribe link is a real, signed one, for contact id
:data:`NOBODY` (no contact has it): clicking it shows the usual page, and confirming changes
nothing.

Sunset notices: each notice kind (``T-30`` is the notice 30 days before the deadline) says
its own count of days, so a proof of the sunset phase sends every notice kind of
``notices.offsets_days`` unless ``notices`` names some.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from herald import audit
from herald.addresses import BadAddress, canonical_email
from herald.config import HeraldConfig, PhaseName
from herald.delivery.audience import NoSegmentation, audience, segmentation_day
from herald.delivery.calendar import notice_message
from herald.delivery.keys import Outcome
from herald.delivery.messages import Variant, check_templates, recipient_values, substitutions
from herald.delivery.sender import Renderer
from herald.delivery.transports import (
    OutgoingBatch,
    Recipient,
    Transport,
    get_transport,
)
from herald.delivery.transports.outbox import OutboxTransport
from herald.errors import HeraldError
from herald.models import ACCOUNT, CONTACT, utcnow
from herald.privacy import mask_email
from herald.settings import Settings
from herald.unsubscribe.links import UnsubscribeLinks

PROOF_MARK = "[Proof] "  # before every proof's subject
PROOF_CATEGORY = "herald-proof"  # a proof's only SendGrid category (never the campaign's)
PROOFS_FOLDER = "proofs"  # under the var directory: the outbox's proofs
AUDIT_ACTION = "phase.proof"
NOBODY = 0  # the contact id of a proof's unsubscribe token: no contact has it
MAX_SEEDS = 100
PLACEHOLDER_NAME = "Alex Example"
PLACEHOLDER_ACCOUNT = "Example Account"

_NOTICE = re.compile(r"(?:t-?)?([0-9]{1,3})", re.IGNORECASE)


class ProofError(HeraldError):
    """A proof that cannot go as asked (a bad or missing seed address, a segment, role,
    locale or notice the phase does not have): nothing was sent."""

    outcome = "Nothing was sent."


def split_values(values: Iterable[str] | None) -> list[str]:
    """Repeated options and comma-separated lists as one list, in order, each value once."""
    out: list[str] = []
    for value in values or ():
        for item in value.split(","):
            item = item.strip()
            if item and item not in out:
                out.append(item)
    return out


def notice_label(offset: int) -> str:
    """How a notice kind is named: ``T-30`` for the notice 30 days before the deadline."""
    return f"T-{offset}"


# --------------------------------------------------------------------------- what to send


@dataclass(frozen=True)
class ProofVariant:
    """One message of a proof: the variant and the name the real send gives its message."""

    variant: Variant
    message: str  # e.g. announcement, sunset-t30@2027-09-30
    notice: str | None = None  # e.g. T-30 (sunset only)


def resolve_seeds(config: HeraldConfig, given: Iterable[str] | None) -> list[str]:
    """The seed addresses, canonical (as customer import makes them): those ``given``
    (``--to``), else ``proof.seeds`` of ``campaign.yaml``; ProofError naming every invalid
    one, or saying how to give seeds when there are none."""
    asked = split_values(given)
    if not asked:
        seeds = list(config.campaign.proof.seeds)
        if not seeds:
            raise ProofError(
                "no seed addresses: give them with --to a@example.com,b@example.com or list "
                "them under proof.seeds in campaign.yaml"
            )
        return seeds
    seeds, problems = [], []
    for value in asked:
        try:
            address = canonical_email(value)
        except BadAddress as error:
            shown = value.encode("unicode_escape").decode("ascii")
            problems.append(f"--to {shown!r} is not an address Herald can send to: {error}")
            continue
        if address not in seeds:
            seeds.append(address)
    if len(seeds) > MAX_SEEDS:
        problems.append(f"--to names {len(seeds)} addresses; a proof goes to at most {MAX_SEEDS}")
    if problems:
        raise ProofError("\n".join(problems))
    return seeds


def _pick(what: str, asked: list[str], allowed: Sequence[str], where: str) -> list[str]:
    """``allowed`` narrowed to ``asked`` (in ``allowed``'s order; all when nothing is asked);
    ValueError naming the values that are not allowed."""
    unknown = [value for value in asked if value not in allowed]
    if unknown:
        listed = ", ".join(repr(value) for value in unknown)
        raise ValueError(f"{what} {listed} {where} (allowed: {', '.join(allowed)})")
    return [value for value in allowed if not asked or value in asked]


def _offsets(config: HeraldConfig, phase: PhaseName, asked: list[str]) -> list[int | None]:
    """The notice offsets to prove (sunset: those asked, else every one), in the order they
    go; ``[None]`` for a broadcast phase. ValueError for a notice asked that is not one."""
    configured = sorted(set(config.campaign.notices.offsets_days), reverse=True)
    if phase != "sunset":
        if asked:
            raise ValueError(f"--notice is for the sunset phase only ({phase} has no notices)")
        return [None]
    wanted: set[int] = set()
    unknown = []
    for value in asked:
        match = _NOTICE.fullmatch(value)
        if match is None or int(match.group(1)) not in configured:
            unknown.append(value)
        else:
            wanted.add(int(match.group(1)))
    if unknown:
        listed = ", ".join(repr(value) for value in unknown)
        allowed = ", ".join(notice_label(offset) for offset in configured)
        raise ValueError(f"notice {listed} is not one of the campaign's notices ({allowed})")
    return [offset for offset in configured if not wanted or offset in wanted]


def choose_variants(
    config: HeraldConfig,
    phase: PhaseName,
    *,
    segments: Iterable[str] | None = None,
    roles: Iterable[str] | None = None,
    locales: Iterable[str] | None = None,
    notices: Iterable[str] | None = None,
) -> list[ProofVariant]:
    """The variants a proof sends: the phase's audience segments x roles (narrowed to those
    asked) x the locales asked (default: the campaign's default locale) x, for the sunset,
    the notice kinds asked (default: every one). ProofError naming every value that is not
    allowed, with the allowed ones."""
    campaign = config.campaign
    wanted = campaign.audiences[phase]
    problems = []
    chosen: dict[str, list[Any]] = {}
    for what, asked, allowed, where in (
        ("segment", segments, list(wanted.segments), f"is not in the {phase} audience"),
        ("role", roles, list(wanted.roles), f"is not in the {phase} audience"),
        ("locale", locales, list(campaign.locales), "is not one of the campaign's locales"),
    ):
        try:
            chosen[what] = _pick(what, split_values(asked), allowed, where)
        except ValueError as error:
            problems.append(str(error))
    try:
        offsets = _offsets(config, phase, split_values(notices))
    except ValueError as error:
        problems.append(str(error))
    if problems:
        raise ProofError("\n".join(problems))
    if not split_values(locales):
        chosen["locale"] = [campaign.locales[0]]
    out = []
    for offset in offsets:
        for segment in chosen["segment"]:
            message: str = phase
            if offset is not None:
                message = notice_message(offset, campaign.sunset[segment])
            for role in chosen["role"]:
                for locale in chosen["locale"]:
                    out.append(
                        ProofVariant(
                            Variant(phase, segment, role, locale, offset),
                            message,
                            None if offset is None else notice_label(offset),
                        )
                    )
    return out


# --------------------------------------------------------------------------- whose values


@dataclass(frozen=True)
class StandIn:
    """Whose name and account fill a variant's per-recipient values."""

    name: str | None
    account_name: str
    contact: str | None = None  # the contact's address, masked; None: placeholder values
    locale: str | None = None  # the contact's own locale
    contact_id: int | None = None

    def describe(self) -> str:
        """Where the values come from, as the command prints it."""
        if self.contact is None:
            return "placeholder values"
        return f"contact {self.contact} (locale {self.locale or 'not set'})"


PLACEHOLDER = StandIn(PLACEHOLDER_NAME, PLACEHOLDER_ACCOUNT)


def stand_ins(
    engine: Engine,
    config: HeraldConfig,
    phase: PhaseName,
    variants: Sequence[Variant],
    as_of: date,
) -> dict[tuple[str, str, str], StandIn]:
    """Per (segment, role, locale) of ``variants``, the first contact of the phase's audience
    as of ``as_of`` in that segment and role, of that campaign locale if one is, else of any;
    a key with no such contact (or no segmentation) is left out (placeholders)."""
    segments = sorted({v.segment for v in variants})
    roles = sorted({v.role for v in variants})
    with engine.connect() as conn:
        try:
            day = segmentation_day(conn, as_of)
        except NoSegmentation:
            return {}
        source = audience(config, phase, day).subquery()
        firsts = conn.execute(
            select(source.c.segment, source.c.role, source.c.locale, func.min(source.c.contact_id))
            .where(source.c.segment.in_(segments), source.c.role.in_(roles))
            .group_by(source.c.segment, source.c.role, source.c.locale)
        ).all()
        by_locale = {(seg, role, locale): first for seg, role, locale, first in firsts}
        by_pair: dict[tuple[str, str], int] = {}
        for (seg, role, _), first in by_locale.items():
            by_pair[(seg, role)] = min(first, by_pair.get((seg, role), first))
        picked: dict[tuple[str, str, str], int] = {}
        for v in variants:
            first = by_locale.get((v.segment, v.role, v.locale)) or by_pair.get((v.segment, v.role))
            if first is not None:
                picked[(v.segment, v.role, v.locale)] = first
        contacts = {
            row.id: row
            for row in conn.execute(
                select(
                    CONTACT.c.id,
                    CONTACT.c.email,
                    CONTACT.c.name,
                    CONTACT.c.locale,
                    ACCOUNT.c.name.label("account_name"),
                )
                .join(ACCOUNT, ACCOUNT.c.id == CONTACT.c.account_id)
                .where(CONTACT.c.id.in_(sorted(set(picked.values()))))
            )
        }
    return {
        key: StandIn(
            contacts[contact_id].name,
            contacts[contact_id].account_name,
            mask_email(contacts[contact_id].email),
            contacts[contact_id].locale,
            contact_id,
        )
        for key, contact_id in picked.items()
    }


# --------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class ProofSent:
    """One variant of a proof: its request to every seed, and what became of it."""

    variant: Variant
    notice: str | None
    subject: str  # as the first seed got it
    language: str
    values_from: str  # StandIn.describe()
    outcome: Outcome
    requests: int = 0
    refused: int = 0  # seeds the transport refused before the request
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Accepted by the transport, for every seed."""
        return self.outcome == Outcome.ACCEPTED and not self.refused


@dataclass
class ProofRun:
    """What one proof send did."""

    proof_id: str
    phase: PhaseName
    transport: str
    seeds: list[str]
    folder: Path | None = None  # the outbox: where the files are
    sent: list[ProofSent] = field(default_factory=list)

    @property
    def failed(self) -> list[ProofSent]:
        """The variants not accepted for every seed."""
        return [item for item in self.sent if not item.ok]


def proof_transport(settings: Settings, config: HeraldConfig) -> Transport:
    """The configured transport (:func:`get_transport`), the outbox writing under
    ``<var>/proofs`` instead of the campaign's outbox."""
    transport = get_transport(settings, config)
    if isinstance(transport, OutboxTransport):
        return OutboxTransport(settings.var_dir / PROOFS_FOLDER)
    return transport


def send_proof(
    engine: Engine,
    *,
    config: HeraldConfig,
    settings: Settings,
    phase: PhaseName,
    as_of: date,
    to: Iterable[str] | None = None,
    segments: Iterable[str] | None = None,
    roles: Iterable[str] | None = None,
    locales: Iterable[str] | None = None,
    notices: Iterable[str] | None = None,
    placeholders: bool = False,
    transport: Transport | None = None,
    links: UnsubscribeLinks | None = None,
    check: Callable[[HeraldConfig, Path], int] = check_templates,
    who: str | None = None,
    now: datetime | None = None,
) -> ProofRun:
    """Send one message per chosen variant (:func:`choose_variants`) to every seed
    (:func:`resolve_seeds`): one request per variant, one recipient per seed.

    Nothing is sent when an input is invalid (ProofError), the transport or the unsubscribe
    key is missing (TransportError, UnsubscribeKeyError) or a template fails the check
    (TemplateError, CatalogError). A request that fails is reported in its ProofSent; the
    others still go. Records one audit-log entry, never a ledger row.
    """
    seeds: list[str] = []
    problems = []
    try:
        seeds = resolve_seeds(config, to)
    except ProofError as error:
        problems.append(str(error))
    try:
        chosen = choose_variants(
            config, phase, segments=segments, roles=roles, locales=locales, notices=notices
        )
    except ProofError as error:
        problems.append(str(error))
    if problems:
        raise ProofError("\n".join(problems))
    transport = transport or proof_transport(settings, config)
    links = links or UnsubscribeLinks.configured(settings, config.campaign)
    check(config, settings.templates_dir)  # a broken template stops the proof here
    values = (
        {}
        if placeholders
        else stand_ins(engine, config, phase, [item.variant for item in chosen], as_of)
    )
    at = now or utcnow()
    proof_id = f"{phase}-{at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    run = ProofRun(proof_id, phase, transport.name, seeds)
    if isinstance(transport, OutboxTransport):
        run.folder = transport.folder(config.campaign.id, proof_id)
    renderer = Renderer(config, settings.templates_dir, subject_prefix=PROOF_MARK)
    number = 0
    for index, item in enumerate(chosen, start=1):
        variant = item.variant
        rendered = renderer(variant)
        stand_in = values.get((variant.segment, variant.role, variant.locale), PLACEHOLDER)
        link = links.link(phase, item.message, NOBODY)
        recipients = []
        for seed in seeds:
            number += 1
            recipients.append(
                Recipient(
                    delivery_id=number,
                    key=f"proof:{proof_id}",  # no "/": never a ledger key (LedgerKey.parse)
                    email=seed,
                    name=stand_in.name,
                    variant=variant,
                    values=recipient_values(
                        name=stand_in.name,
                        email=seed,
                        account_name=stand_in.account_name,
                        unsubscribe_url=link.url if link else "",
                        greetings=rendered.greetings,
                    ),
                    headers=link.headers if link else {},
                )
            )
        batch = OutgoingBatch(
            batch_id=f"{proof_id}-{index}",
            campaign=config.campaign.id,
            message=proof_id,
            sender=config.campaign.sender,
            variants={variant: rendered},
            recipients=recipients,
            categories=[PROOF_CATEGORY],
        )
        sent = ProofSent(
            variant=variant,
            notice=item.notice,
            subject=rendered.subject_for(substitutions(recipients[0].values)),
            language=rendered.language,
            values_from=stand_in.describe(),
            outcome=Outcome.FAILED,
        )
        run.sent.append(_deliver(transport, batch, sent))
    with engine.begin() as conn:
        audit.record(
            conn,
            AUDIT_ACTION,
            campaign=config.campaign.id,
            phase=phase,
            detail={
                "proof": proof_id,
                "transport": transport.name,
                "seeds": len(seeds),
                "to": [mask_email(seed) for seed in seeds],
                "values": "placeholders" if placeholders else "stand-ins",
                "variants": [
                    {
                        "segment": item.variant.segment,
                        "role": item.variant.role,
                        "locale": item.variant.locale,
                        "notice": item.notice,
                        "outcome": item.outcome.value,
                        "refused": item.refused,
                        "error": item.error,
                    }
                    for item in run.sent
                ],
                "accepted": sum(1 for item in run.sent if item.ok),
                "failed": len(run.failed),
            },
            who=who,
        )
    return run


def _deliver(transport: Transport, batch: OutgoingBatch, sent: ProofSent) -> ProofSent:
    """Prepare and send one variant's request; what became of it (never raises for the
    transport's failures: the other variants still go)."""
    try:
        prepared = transport.prepare(batch)
    except Exception as error:
        return replace(
            sent, error=f"the request could not be built: {type(error).__name__}: {error}"
        )
    refused = len(prepared.refused)
    if not prepared.batch.recipients:
        reasons = "; ".join(sorted(set(prepared.refused.values())))
        return replace(sent, refused=refused, error=f"every seed was refused: {reasons}")
    try:
        result = transport.send(prepared)
    except Exception as error:
        return replace(
            sent,
            outcome=Outcome.UNKNOWN,
            requests=1,
            refused=refused,
            error=f"transport error: {type(error).__name__}: {error}",
        )
    return replace(
        sent,
        outcome=result.outcome,
        requests=result.requests,
        refused=refused,
        error=result.error,
    )
