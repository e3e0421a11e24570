"""The metalearn version, in the core so that any layer may read it (pickles record it)."""

__version__ = "0.1.0.dev0"
