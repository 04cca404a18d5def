"""Log files of the processes LEGO starts (bricks, agents, switches)."""

from __future__ import annotations

from pathlib import Path


def log_tail(path: Path, chars: int = 3000) -> str:
    """The last ``chars`` characters of a log, for an error message."""
    try:
        text = Path(path).read_text(errors="replace").strip()
    except FileNotFoundError:
        return "(no log)"
    return text[-chars:] or "(empty log)"
