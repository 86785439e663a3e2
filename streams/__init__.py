"""Kinesis and AWS I/O: the client factory, the producer, the shard reader and the runner."""
