"""The user-facing package: `annlab.client` (the Python client) and `annlab.cli` (the `annlab`
command)."""
