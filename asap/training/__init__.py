"""asap.training package."""
