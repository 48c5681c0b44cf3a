"""Telemetry in: SendGrid events through the signed webhook, batch files through contracts."""
