"""The gallery of enrolled people on the box: its SQLite store, its JSON exchange format, and the signed commands
from the central that change it (verified, applied on a worker thread, remembered until they expire)."""
