"""cryptfs: an encrypted FUSE overlay whose backing directory can live in any cloud."""

__version__ = "0.1.0"
