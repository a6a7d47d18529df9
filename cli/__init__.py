"""The `kinetic` command line (Typer + Rich); installed as `kinetic.cli`."""
