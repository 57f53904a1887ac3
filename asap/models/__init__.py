"""asap.models package."""
