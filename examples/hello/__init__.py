"""Hello, actors: ``actorq run actorq.examples.hello:main`` (see app.py)."""

from .app import main as main
