"""Tests of the report wing: success metrics and the weekly report."""
