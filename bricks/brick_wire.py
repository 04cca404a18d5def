"""The wire format between bricks: one batch = one ZeroMQ multipart message.

Frame 0 is a small JSON header; frames 1..n are the raw bytes of n numpy arrays
(C order), sent without copying them into Python objects and viewed again with
``np.frombuffer`` on the receiving side (read-only views of the frames):

    header = {"v": 1, "kind": "data" | "end", "batch": 17, "part": 0, "parts": 2,
              "seq0": 139264, "seq1": 147456, "rows": 8101, "src": "fq/1",
              "t0": 1718000000.25, "meta": {...},
              "arrays": [["ts", "<f8", [4051]], ["src_addr", "|u1", [4051, 16]], ...]}

- ``batch``: the id the source gave the batch (0, 1, 2, ... with no gaps);
  ``part``/``parts``: which of the pieces a key-routing brick split it into
  (every piece is sent, empty or not, so the merger knows how many to expect).
- ``seq0``/``seq1``: the half-open switch-sequence range the whole batch covers;
  ``rows``: how many scored rows (primary packets) the whole batch yields, so a
  lost piece is accounted for in packets as well as in batches.
- ``t0``: wall time the source read the batch (end-to-end latency).
- ``kind = "end"``: the sender will send nothing more (``meta`` carries the
  source's totals); a brick finishes when every upstream sender has ended.

Control messages (agent -> brick, on the brick's control socket) are one JSON
frame: ``{"op": "go" | "stop" | "route" | "remove_replica" | "upstream_dead", ...}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lego.bricks.brick_errors import WireError

WIRE_VERSION = 1
KINDS = ("data", "end")


@dataclass
class Message:
    """One batch (or end marker) in flight between bricks."""

    kind: str = "data"
    batch: int = -1
    part: int = 0
    parts: int = 1
    seq0: int = 0
    seq1: int = 0
    rows: int = 0
    src: str = ""
    t0: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def header(self) -> dict[str, Any]:
        return {"v": WIRE_VERSION, "kind": self.kind, "batch": self.batch, "part": self.part,
                "parts": self.parts, "seq0": self.seq0, "seq1": self.seq1, "rows": self.rows,
                "src": self.src, "t0": self.t0, "meta": self.meta}

    def with_arrays(self, arrays: dict[str, np.ndarray], **changes: Any) -> Message:
        """A message with this one's header (``changes`` applied) and new arrays."""
        h = {k: v for k, v in self.header().items() if k != "v"}
        h.update(changes)
        return Message(**h, arrays=arrays)

    @property
    def n(self) -> int:
        """Rows in this message (the first array's length; 0 without arrays)."""
        for arr in self.arrays.values():
            return int(arr.shape[0]) if arr.ndim else 1
        return 0


def encode(msg: Message) -> list:
    """Frames for ``socket.send_multipart(frames, copy=False)``: the header, then
    each array's buffer (contiguous arrays are not copied)."""
    if msg.kind not in KINDS:
        raise WireError(f"Message.kind: expected one of {KINDS}, got {msg.kind!r}")
    specs = []
    frames: list = [b""]
    for name, arr in msg.arrays.items():
        a = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
        if a.dtype.hasobject:
            raise WireError(f"Message.arrays[{name!r}]: object arrays cannot travel, "
                            f"got dtype {a.dtype}")
        specs.append([name, a.dtype.str, list(a.shape)])
        frames.append(a.reshape(-1).view(np.uint8) if a.size else b"")
    header = msg.header()
    header["arrays"] = specs
    frames[0] = json.dumps(header, separators=(",", ":")).encode()
    return frames


def _buffer(frame) -> memoryview:
    if hasattr(frame, "buffer"):  # zmq.Frame
        return frame.buffer
    return memoryview(frame)


def decode(frames: list) -> Message:
    """The message of a list of frames (bytes or ``zmq.Frame``); arrays are views."""
    if not frames:
        raise WireError("message: expected at least a header frame, got none")
    try:
        h = json.loads(bytes(_buffer(frames[0])))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"message header: expected JSON, got {bytes(_buffer(frames[0]))[:60]!r}"
                        ) from exc
    if not isinstance(h, dict) or h.get("v") != WIRE_VERSION:
        raise WireError(f"message header: expected wire version {WIRE_VERSION}, "
                        f"got {h.get('v') if isinstance(h, dict) else h!r}")
    specs = h.pop("arrays", [])
    h.pop("v")
    if len(specs) != len(frames) - 1:
        raise WireError(f"message: header lists {len(specs)} arrays, got {len(frames) - 1} "
                        "array frames")
    arrays = {}
    for (name, dtype, shape), frame in zip(specs, frames[1:], strict=True):
        dt = np.dtype(dtype)
        buf = _buffer(frame)
        want = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if buf.nbytes != want:
            raise WireError(f"message array {name!r}: expected {want} bytes for {dtype} "
                            f"{shape}, got {buf.nbytes}")
        arrays[name] = np.frombuffer(buf, dtype=dt).reshape(shape) if want else \
            np.zeros(shape, dtype=dt)
    try:
        msg = Message(**h, arrays=arrays)
    except TypeError as exc:
        raise WireError(f"message header: {exc}") from exc
    if msg.kind not in KINDS:
        raise WireError(f"message header kind: expected one of {KINDS}, got {msg.kind!r}")
    return msg


def nbytes(msg: Message) -> int:
    """Bytes of array payload in a message."""
    return sum(int(a.nbytes) for a in msg.arrays.values())
