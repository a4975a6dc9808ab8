"""The `ctmanager` ops CLI."""
