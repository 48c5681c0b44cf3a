"""Test doubles for Herald's external services.

:mod:`herald.testing.fake_sendgrid` is a real HTTP server that speaks SendGrid's v3 Mail Send
API on 127.0.0.1: it validates each request against the official OpenAPI schema (vendored
next to it) and SendGrid's own rules, records what each recipient would receive, and
injects rate limits, server errors, connection resets and latency on demand.

Import from the module itself (``from herald.testing.fake_sendgrid import FakeSendGrid``):
this package imports nothing, so ``python -m herald.testing.fake_sendgrid`` runs cleanly.
"""
