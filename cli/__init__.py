"""The `kinetic` command line (Typer + Rich).

This folder is installed as ``kinetic.cli`` (``pyproject.toml`` maps ``cli/`` there with
setuptools ``package-dir``, as it maps ``models/`` to ``kinetic.models``); the console script is
``kinetic = kinetic.cli.app:main``. Import it only as ``kinetic.cli``.
"""
