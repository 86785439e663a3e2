"""The pure windowing core: windows, watermarks, aggregators and the per-shard engine.

Nothing here imports boto3, botocore or ``streams``, and nothing reads the clock
(tests/unit/test_purity.py enforces it).
"""
