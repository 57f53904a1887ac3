"""asap.tasks package."""
