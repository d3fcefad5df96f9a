"""``python -m actorq`` is the ``actorq`` command."""

import sys

from .cli import main

sys.exit(main())
