"""`python -m cubeqa` runs the CLI."""

from cubeqa.cli import app

app()
