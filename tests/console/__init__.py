"""Tests of the ops console: status, a contact's history, exports, suppressions."""
