"""asap.nn package."""
