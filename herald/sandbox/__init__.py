"""The sandbox: the demo base and the rehearsal of a whole campaign on synthetic data."""
