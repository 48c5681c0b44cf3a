"""The ops console: what an operator asks of a running campaign: its status, a contact's
history, exports of the ledger and events, the suppression list."""
