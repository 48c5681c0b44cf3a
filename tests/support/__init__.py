"""Helpers shared by the tests (bases, fakes' drivers, CSV writers); fixtures stay in conftest."""
