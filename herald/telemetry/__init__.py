"""Telemetry: what comes back in from the campaign, checked at the door.

- :mod:`herald.telemetry.webhook`: SendGrid's Event Webhook receiver; the events of a body
  are checked by :mod:`herald.telemetry.events`, act through
  :mod:`herald.telemetry.event_effects`, and are kept and processed as batches by
  :mod:`herald.telemetry.webhook_batches`;
- :mod:`herald.telemetry.ingest`: batch files (adoption, support tickets, satisfaction surveys,
  performance reports; formats in :mod:`herald.telemetry.sources`, read by
  :mod:`herald.telemetry.batch_file`), validated against the data contracts in
  ``config/expectations/`` (:mod:`herald.telemetry.contracts`, Great Expectations, over the
  frame :mod:`herald.telemetry.validation_frame` builds), bad rows quarantined, bad batches
  rejected whole; adoption moves accounts' migration state (:mod:`herald.telemetry.adoption`);
- :mod:`herald.telemetry.customer_contract`: the same contracts run over an accounts export
  before it is imported;
- :mod:`herald.telemetry.health`: which sources' last batch was rejected, so flows that
  depend on them refuse to run until a good batch arrives or an operator overrides.
"""
