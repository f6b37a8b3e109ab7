"""Command-line entry points (the only place configs become arguments)."""
