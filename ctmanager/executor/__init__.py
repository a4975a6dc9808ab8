"""Running actions on HNs over SSH."""
