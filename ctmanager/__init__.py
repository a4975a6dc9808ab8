"""ctmanager — container-platform manager for templated racks."""

__version__ = "0.1.0"
