"""The lab: a real rack on one machine."""
