"""Herald's test suite, one folder per wing; shared helpers in tests/support."""
