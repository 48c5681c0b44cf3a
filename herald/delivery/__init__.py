"""Delivery: who gets which message when, the exactly-once ledger, the sender and its transports."""
