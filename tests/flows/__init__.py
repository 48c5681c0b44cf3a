"""Tests of the flows as a whole: deployments, the demo, the rehearsal, chaos and exit codes."""
