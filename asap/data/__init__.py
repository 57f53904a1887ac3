"""asap.data package."""
