"""The wire format between bricks: one batch = one ZeroMQ multipart message.

Frame 0 is a small JSON header; frames 1..n are the raw bytes of n numpy arrays
(C order), sent without copying them into Python objects and viewed again with
``np.frombuffer`` on the receiving side (read-only views of the frames):

    header = {"v": 1, "kind": "data" | "end", "batch": 17, "part": 0, "parts": 2,
              "seq0": 139264, "seq1": 147456, "rows": 8101, "src": "fq/1",
              "t0": 1718000000.25, "meta": {...},
              "arrays": [["ts", "<f8", [4051]], ["src_addr", "|u1", [4051, 16]], ...]}

- ``batch``: the id the source gave the batch (0, 1, 2, ... with no gaps), in
  the source's epoch: a source restarted k times numbers from ``k << EPOCH_BITS``
  (:func:`epoch_start`), so that a merger tells its batches from those its dead
  incarnation sent, some of which may still be in flight;
  ``part``/``parts``: which of the pieces a key-routing brick split it into
  (every piece is sent, empty or not, so the merger knows how many to expect).
- ``seq0``/``seq1``: the half-open switch-sequence range the whole batch covers;
  ``rows``: how many scored rows (primary packets) the whole batch yields, so a
  lost piece is accounted for in packets as well as in batches.
- ``t0``: wall time the source read the batch (end-to-end latency).
- ``kind = "end"``: the sender will send nothing more (``meta`` carries the
  source's totals); a brick finishes when every upstream sender has ended.
- ``kind = "count"``: no rows; ``meta.taken0`` is the frames a source took so far,
  sent to its one next hop when re-routed (a keyed brick restarted by Ray counts
  the port's frames from it; :mod:`lego.bricks.moves`). Other bricks ignore it.

Shared memory (same host, :mod:`lego.bricks.shm`): the header is the same
plus ``"shm": {"seg": NAME, "size": BYTES, "slot": K, "ack": ADDRESS}`` and each
array spec gets a fourth item, its byte offset in that segment; the message is
then the header frame alone and the receiver views the arrays in place
(:func:`decode` with a ``segment`` resolver). Received arrays, shared or not,
are read-only views valid until the receiver takes its next message: a logic
that keeps input arrays longer copies them (the shm receiver detects one that
does not and gives it the segment for good, see :mod:`lego.bricks.shm`).

Control messages (supervisor -> brick, on the brick's control socket) are one JSON
frame: ``{"op": "go" | "stop" | "route" | "remove_replica" | "upstream_dead", ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lego.bricks.errors import WireError

WIRE_VERSION = 1
KINDS = ("data", "end", "count")
#: the low bits of a batch id count the batches of one incarnation of the source
EPOCH_BITS = 32


def epoch_of(batch: int) -> int:
    """The incarnation of the source that numbered ``batch``."""
    return batch >> EPOCH_BITS


def epoch_start(epoch: int) -> int:
    """The first batch id of a source's ``epoch``-th incarnation."""
    return epoch << EPOCH_BITS


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


def contiguous(msg: Message) -> list[tuple[str, np.ndarray]]:
    """(name, C-contiguous array) of each array of a message, checked for travel."""
    if msg.kind not in KINDS:
        raise WireError(f"Message.kind: expected one of {KINDS}, got {msg.kind!r}")
    out = []
    for name, arr in msg.arrays.items():
        a = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
        if a.dtype.hasobject:
            raise WireError(f"Message.arrays[{name!r}]: object arrays cannot travel, "
                            f"got dtype {a.dtype}")
        out.append((name, a))
    return out


def header_frame(msg: Message, specs: list, shm: dict[str, Any] | None = None) -> bytes:
    """The JSON header frame: the message's header, its array specs, and where the
    arrays are when they travel in shared memory."""
    header = msg.header()
    header["arrays"] = specs
    if shm is not None:
        header["shm"] = shm
    return json.dumps(header, separators=(",", ":")).encode()


def _owns_shared(a: np.ndarray) -> bool:
    """True when ``a`` views a shared-memory mapping (it must be copied before a
    socket may send it without copying: the slot is reused once released)."""
    import mmap

    b = a.base
    while isinstance(b, np.ndarray):
        b = b.base
    if isinstance(b, memoryview):
        b = b.obj
    return isinstance(b, mmap.mmap)


def encode(msg: Message) -> list:
    """Frames for ``socket.send_multipart(frames, copy=False)``: the header, then
    each array's buffer (contiguous arrays are not copied, unless they view a
    shared-memory slot, which is reused once released)."""
    specs = []
    frames: list = [b""]
    for name, a in contiguous(msg):
        if a.size and _owns_shared(a):
            a = a.copy()
        specs.append([name, a.dtype.str, list(a.shape)])
        frames.append(a.reshape(-1).view(np.uint8) if a.size else b"")
    frames[0] = header_frame(msg, specs)
    return frames


def _buffer(frame) -> memoryview:
    if hasattr(frame, "buffer"):  # zmq.Frame
        return frame.buffer
    return memoryview(frame)


def decode(frames: list, segment: Callable[[dict], np.ndarray] | None = None) -> Message:
    """The message of a list of frames (bytes or ``zmq.Frame``); arrays are views.

    ``segment(shm)``: for a header with an ``shm`` part, the bytes of that segment
    (a uint8 array), in which each array spec gives its offset."""
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
    shm = h.pop("shm", None)
    if shm is not None:
        return _decode_shared(h, specs, shm, segment, len(frames))
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
    return _message(h, arrays)


def _message(h: dict, arrays: dict[str, np.ndarray]) -> Message:
    try:
        msg = Message(**h, arrays=arrays)
    except TypeError as exc:
        raise WireError(f"message header: {exc}") from exc
    if msg.kind not in KINDS:
        raise WireError(f"message header kind: expected one of {KINDS}, got {msg.kind!r}")
    return msg


def _decode_shared(h: dict, specs: list, shm: Any, segment: Callable[[dict], np.ndarray] | None,
                   n_frames: int) -> Message:
    if segment is None:
        raise WireError("message header: arrays in shared memory, but this receiver has no "
                        "shared-memory segments (a tcp hop?)")
    if n_frames != 1 or not isinstance(shm, dict):
        raise WireError(f"message: shared-memory header expected alone with an shm table, got "
                        f"{n_frames} frames, shm {shm!r}")
    buf = segment(shm)
    arrays = {}
    for spec in specs:
        if len(spec) != 4:
            raise WireError(f"message array spec: expected [name, dtype, shape, offset] in "
                            f"shared memory, got {spec!r}")
        name, dtype, shape, off = spec
        dt = np.dtype(dtype)
        want = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if off < 0 or off + want > buf.nbytes:
            raise WireError(f"message array {name!r}: bytes {off}..{off + want} are outside "
                            f"segment {shm.get('seg')!r} of {buf.nbytes} bytes")
        arrays[name] = buf[off:off + want].view(dt).reshape(shape) if want else \
            np.zeros(shape, dtype=dt)
    return _message(h, arrays)


def nbytes(msg: Message) -> int:
    """Bytes of array payload in a message."""
    return sum(int(a.nbytes) for a in msg.arrays.values())
