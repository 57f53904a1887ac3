"""asap.metrics package."""
