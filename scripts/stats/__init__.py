"""Statistics the aggregate step computes: metrics, intervals, comparisons, the verdict."""
