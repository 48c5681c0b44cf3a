"""What Herald's tests, benchmarks and chaos run stand on, in place of external services.

- :mod:`herald.testing.fake_sendgrid`: a real HTTP server that speaks SendGrid's v3 Mail Send
  API on 127.0.0.1: it validates each request against the official OpenAPI schema (vendored
  next to it) and SendGrid's own rules, records what each recipient would receive, and
  injects rate limits, server errors, connection resets and latency on demand;
- :mod:`herald.testing.event_webhook`: SendGrid's side of the signed Event Webhook (a key
  pair that signs as SendGrid does, and a poster of accepted recipients' events);
- :mod:`herald.testing.synthetic`: a throwaway database, a synthetic base of any size, a
  config copy with its sending tuned, and emptying what sending wrote;
- :mod:`herald.testing.processes`: services in child processes (free port, health wait,
  a stop that always reaps);
- :mod:`herald.testing.lifecycle`: what the in-process services share (``with`` starts and
  always stops them).

Import from the modules themselves (``from herald.testing.fake_sendgrid import FakeSendGrid``):
this package imports nothing, so ``python -m herald.testing.fake_sendgrid`` runs cleanly.
"""
