"""Hello, actors: ``actorq run examples.hello:main`` (see app.py)."""

from .app import main as main
