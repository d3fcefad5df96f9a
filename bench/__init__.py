"""actorq's side-by-side benchmarks: ``python -m bench NAME [--json]``."""
