"""Keeping personal data out of logs, artifacts and reports."""

from __future__ import annotations


def mask_email(email: str) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com``: enough to tell, not enough to mail."""
    local, at, domain = email.partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"
