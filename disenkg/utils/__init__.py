"""Small shared helpers: registries, seeding, atomic file writes."""

from disenkg.utils.io import atomic_save, atomic_write_text
from disenkg.utils.registry import Registry
from disenkg.utils.seed import seed_everything

__all__ = ["Registry", "atomic_save", "atomic_write_text", "seed_everything"]
