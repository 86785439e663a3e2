"""shardflow: exactly-once windowed aggregation of Amazon Kinesis streams.

This package is the application shell: the command line, settings, wiring and the
embedded emulator launcher. It is kept import-light on purpose: the LocalStack init hook
imports ``shardflow.resources`` inside the LocalStack container.
"""

__version__ = "0.1.0"
