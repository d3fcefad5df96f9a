"""parse -> transform -> aggregate on separate workers, with backpressure; see :mod:`.app`."""
