"""hako: Linux container labs — namespaces, cgroups, images — in plain Python."""

__version__ = "0.1.0"
