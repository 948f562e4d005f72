"""edge: face-recognition attendance daemon for a camera box at the door."""


def _installed_version() -> str:
    """The version setuptools-scm wrote at install time (see edge.version for the running checkout's own)."""
    try:
        from edge._version import version
    except ImportError:  # running from a tree that was never installed
        return "0.1.0+unknown"
    return str(version)


__version__ = _installed_version()
