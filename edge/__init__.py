"""edge: face-recognition attendance daemon for a camera box at the door."""

__version__ = "0.1.0"
