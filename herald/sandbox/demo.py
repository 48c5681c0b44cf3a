"""A deterministic synthetic customer base for the demo, the tests and the benchmarks.

The same seed and size always give byte-identical CSV files, written row by row (a million
accounts need no more memory than ten). Every account has an executive, a technical contact
and one more; the figures follow no real customer.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from herald.customers.rows import (
    ACCOUNT_OPTIONAL,
    ACCOUNT_REQUIRED,
    ATTRIBUTE_PREFIX,
    CONTACT_OPTIONAL,
    CONTACT_REQUIRED,
)

TIERS = (("enterprise", 15), ("business", 35), ("starter", 50))
REGIONS = (("na", 40), ("emea", 30), ("apac", 20), ("latam", 10))
INDUSTRIES = (
    ("software", 22),
    ("retail", 14),
    ("manufacturing", 12),
    ("media", 8),
    ("logistics", 8),
    ("education", 8),
    ("energy", 6),
    ("banking", 7),
    ("insurance", 5),
    ("healthcare", 6),
    ("government", 4),
)
TIMEZONES = {
    "na": ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"),
    "emea": ("Europe/London", "Europe/Berlin", "Europe/Paris", "Africa/Johannesburg"),
    "apac": ("Asia/Tokyo", "Asia/Singapore", "Australia/Sydney", "Asia/Kolkata"),
    "latam": ("America/Sao_Paulo", "America/Mexico_City", "America/Bogota"),
}
LOCALES = {
    "na": ("en", "en", "en", "es"),
    "emea": ("en", "de", "fr", "en-GB"),
    "apac": ("en", "ja", "en-AU", "en"),
    "latam": ("es", "pt-BR", "es", "en"),
}
LEGACY_VERSIONS = (3.2, 3.4, 3.6, 3.8, 4.0, 4.1, 4.2, 4.3)
FIRST_NAMES = (
    "Ada",
    "Grace",
    "Alan",
    "Barbara",
    "Edsger",
    "Frances",
    "Donald",
    "Margaret",
    "Ken",
    "Radia",
    "Linus",
    "Sophie",
    "Guido",
    "Hedy",
    "Tim",
    "Katherine",
    "Dennis",
    "Annie",
    "John",
    "Shafi",
    "Leslie",
    "Jean",
    "Niklaus",
    "Mary",
    "José",
    "Zoë",
)
LAST_NAMES = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Liskov",
    "Dijkstra",
    "Allen",
    "Knuth",
    "Hamilton",
    "Thompson",
    "Perlman",
    "Torvalds",
    "Wilson",
    "Rossum",
    "Lamarr",
    "Berners-Lee",
    "Johnson",
    "Ritchie",
    "Easley",
    "McCarthy",
    "Goldwasser",
    "Lamport",
    "Sammet",
    "Wirth",
    "Kenneth",
    "Müller",
    "Okafor",
)
NAME_PARTS = (
    "North",
    "Blue",
    "Iron",
    "Bright",
    "Pine",
    "Silver",
    "Quantum",
    "Harbor",
    "Summit",
    "Cedar",
    "Nova",
    "Atlas",
    "Vertex",
    "Orbit",
    "Falcon",
    "Granite",
    "Echo",
    "Lumen",
)
NAME_SUFFIXES = (
    "Labs",
    "Systems",
    "Group",
    "Works",
    "Analytics",
    "Logistics",
    "Health",
    "Bank",
    "Retail",
    "Media",
    "Energy",
    "Partners",
)

ATTRIBUTES = [
    "performance_focused",
    "legacy_version",
    "change_policy",
    "employees",
    "account_owner",
    "use_case",
    "case_study_consent",
]
OWNERS = {
    "na": ("Dana Whitfield", "Marcus Lee", "NA enterprise team"),
    "emea": ("Sofia Rossi", "Jonas Berg", "EMEA success team"),
    "apac": ("Aiko Tanaka", "Ravi Menon", "APAC success team"),
    "latam": ("Lucía Fernández", "LATAM success team"),
}
USE_CASES = (
    "web backend",
    "data pipelines",
    "ML inference service",
    "command-line tools",
    "batch analytics",
    "test automation",
)
ACCOUNT_HEADER = [
    *ACCOUNT_REQUIRED,
    *ACCOUNT_OPTIONAL,
    *(ATTRIBUTE_PREFIX + name for name in ATTRIBUTES),
]
CONTACT_HEADER = [*CONTACT_REQUIRED, *CONTACT_OPTIONAL]


@dataclass(frozen=True)
class DemoFiles:
    """Where the synthetic base was written."""

    accounts_csv: Path
    contacts_csv: Path
    accounts: int
    contacts: int


def _weighted(rng: random.Random, choices: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([name for name, _ in choices], weights=[w for _, w in choices])[0]


def write_demo_base(
    directory: Path,
    *,
    accounts: int = 2_000,
    seed: int = 7,
    as_of: date | None = None,
    contacts_per_account: int = 3,
) -> DemoFiles:
    """Write ``accounts.csv`` and ``contacts.csv`` to ``directory``.

    Each account has an executive, a technical contact and then technical or other contacts
    up to ``contacts_per_account``.
    """
    if accounts < 1:
        raise ValueError("the demo needs at least one account")
    rng = random.Random(seed)
    # Drawn apart, so the attributes added later leave every earlier value as it was.
    extra = random.Random(seed + 7_919)
    today = as_of or date(2026, 11, 24)
    directory.mkdir(parents=True, exist_ok=True)
    accounts_csv = directory / "accounts.csv"
    contacts_csv = directory / "contacts.csv"
    contacts = 0
    with (
        accounts_csv.open("w", newline="", encoding="utf-8") as account_file,
        contacts_csv.open("w", newline="", encoding="utf-8") as contact_file,
    ):
        account_writer = csv.writer(account_file)
        contact_writer = csv.writer(contact_file)
        account_writer.writerow(ACCOUNT_HEADER)
        contact_writer.writerow(CONTACT_HEADER)
        for number in range(1, accounts + 1):
            external_id = f"ACC-{number:07d}"
            region = _weighted(rng, REGIONS)
            tier = _weighted(rng, TIERS)
            roll = rng.random()
            state, migrated_on = "not_started", ""
            if roll < 0.02:
                state = "migrated"
                migrated_on = (today - timedelta(days=rng.randint(1, 60))).isoformat()
            elif roll < 0.10:
                state = "in_progress"
            account_writer.writerow(
                [
                    external_id,
                    " ".join(
                        (rng.choice(NAME_PARTS), rng.choice(NAME_PARTS), rng.choice(NAME_SUFFIXES))
                    ),
                    tier,
                    region,
                    _weighted(rng, INDUSTRIES),
                    "churned" if rng.random() < 0.04 else "active",
                    state,
                    migrated_on,
                    "true" if rng.random() < 0.18 else "false",
                    rng.choice(LEGACY_VERSIONS),
                    "conservative" if rng.random() < 0.10 else "standard",
                    rng.choice((8, 25, 60, 150, 400, 1200, 5000)),
                    extra.choice(OWNERS[region]) if extra.random() < 0.85 else "",
                    extra.choice(USE_CASES),
                    "true" if extra.random() < 0.3 else "false",
                ]
            )
            domain = f"{external_id.lower()}.example.com"
            roles = ["executive", "technical"][:contacts_per_account]
            roles += [rng.choice(("technical", "other")) for _ in range(contacts_per_account - 2)]
            for role in roles:
                contacts += 1
                first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                # Names keep their accents; addresses stay ASCII, as most mail systems want.
                ascii_name = unicodedata.normalize("NFKD", f"{first}.{last}").encode(
                    "ascii", "ignore"
                )
                local = ascii_name.decode().lower().replace(" ", "")
                timezone = "" if rng.random() < 0.03 else rng.choice(TIMEZONES[region])
                contact_writer.writerow(
                    [
                        external_id,
                        f"{local}.{contacts}@{domain}",
                        f"{first} {last}",
                        role,
                        timezone,
                        rng.choice(LOCALES[region]),
                    ]
                )
    return DemoFiles(accounts_csv, contacts_csv, accounts, contacts)
