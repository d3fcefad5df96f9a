"""Machine discovery: what the hardware is, and the scheduling universe built on it."""
