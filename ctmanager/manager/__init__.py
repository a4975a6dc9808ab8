"""The per-rack manager: config, daemon, one-pass reconcile."""
