"""Operator-facing shell: settings loading, logging setup and the lighter-hedge CLI."""
