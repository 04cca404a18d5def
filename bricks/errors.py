"""Errors of the brick runtime (all :class:`~lego.errors.LegoError`)."""

from __future__ import annotations

from lego.errors import ConfigError, LegoError


class BrickError(LegoError):
    """A brick or its supervisor failed (names the brick, and the exit code where known)."""


class GraphError(ConfigError):
    """A brick graph file breaks a rule: names the file, the key, expected and got."""


class WireError(BrickError):
    """A message between bricks is malformed."""


class StateTransferError(BrickError):
    """A brick cannot export or import keyed state (west-east interface)."""
