"""Stateful processing: the pure windowing core, pipelines, and sinks."""
