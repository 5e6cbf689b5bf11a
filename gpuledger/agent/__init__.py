"""The long-running node agent: config, scheduling, snapshot, HTTP server."""
