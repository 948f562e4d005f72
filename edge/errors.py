"""One exception hierarchy; the CLI turns each into one clear line and a non-zero exit."""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error a user can cause or fix (bad input, bad config, missing model)."""


class ConfigError(EdgeError):
    """The YAML configuration is invalid; the message names the key path (and line)."""


class ModelError(EdgeError):
    """The model file is missing, corrupt, or does not match its manifest."""


class ImageError(EdgeError):
    """An image could not be read or decoded (corrupt, empty, not an image, too large)."""


class GalleryError(EdgeError):
    """A gallery operation was refused (unknown person, wrong model id, bad import file)."""


class StoreError(EdgeError):
    """The event store cannot be opened, or a read or write failed (the message names the file)."""
