"""Tests of the delivery wing: audience, ledger, sender, messages, transports."""
