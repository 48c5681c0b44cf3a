"""Tests of the telemetry wing: ingest, contracts, the event webhook."""
