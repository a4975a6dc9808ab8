"""ctagent: the HN agent (observe, report, apply actions for the manager)."""
