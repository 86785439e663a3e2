"""Sinks: where effects go. Ports (protocols), AWS adapters and in-memory fakes."""
