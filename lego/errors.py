"""The one exception hierarchy of LEGO.

Libraries raise these and never print or exit; the CLI turns any of them into one
clear line on stderr and a non-zero exit status.
"""


class LegoError(Exception):
    """Base class of every error LEGO raises on purpose."""


class ConfigError(LegoError):
    """A configuration or argument is invalid (names the key, expected and received)."""


class TraceError(LegoError):
    """A capture cannot be read: names the file and, where known, the packet index."""

    def __init__(self, path: str, message: str, index: int | None = None):
        self.path = str(path)
        self.index = index
        where = f"{self.path}" if index is None else f"{self.path}, packet {index}"
        super().__init__(f"{where}: {message}")


class ModelError(LegoError):
    """A model file is missing, of the wrong version or inconsistent."""


class BuildError(LegoError):
    """A compiled extension is missing: the message says how to build it."""
