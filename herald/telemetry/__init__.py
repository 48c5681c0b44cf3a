"""Telemetry: what comes back in from the campaign, checked at the door.

- :mod:`herald.telemetry.webhook` and :mod:`herald.telemetry.events`: SendGrid's Event Webhook;
- :mod:`herald.telemetry.ingest`: batch files (adoption, support tickets, satisfaction surveys,
  performance reports), validated against the data contracts in ``config/expectations/``
  (:mod:`herald.telemetry.contracts`, Great Expectations), bad rows quarantined, bad batches
  rejected whole;
- :mod:`herald.telemetry.health`: which sources' last batch was rejected, so flows that
  depend on them refuse to run until a good batch arrives or an operator overrides.
"""
