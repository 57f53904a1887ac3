"""asap.losses package."""
