"""asap.inference package."""
