"""The dashboard ``shardflow serve`` serves at ``/``: static files, no build step."""
