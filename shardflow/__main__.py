"""``python -m shardflow``: the same as the ``shardflow`` command."""

import sys

from shardflow.cli import main

sys.exit(main())
