"""What every step shares: atomic file writes, the results layout, tracing."""
