"""The software target: ``lego.p4``'s model on AF_PACKET ports, served over P4Runtime.

Where ``simple_switch_grpc`` is absent, this process stands in for it (DESIGN
section 5): same command line (``lego switch``, :mod:`lego.cli_switch`), a real
P4Runtime server (:mod:`lego.switch.server`), and frames forwarded with
the semantics of ``lego.p4`` (:mod:`lego.switch.pipeline`).

One forwarding thread polls every port; each ready port yields a batch of
frames (recvmmsg), the batch goes through the pipeline under its lock (so a
P4Runtime Write is atomic with respect to batches), and the output frames go
out per egress port (sendmmsg). A round that read less than a full batch is
followed by a pause of ``coalesce_us`` before the next poll (receive interrupt
moderation, as a NIC's rx-usecs): at make run's few thousand frames per second
a round takes one or two frames, and the pause cut this process's CPU per
forwarded frame by a sixth (25 against 31 us, one make run each, status reads of
the run's port cells only; with whole-counter reads those reads dominated and no
difference showed, 0.49 core either way). It adds at most
``coalesce_us`` to a frame's time in the switch (its ingress stamp is still its
kernel arrival time, so the pause counts in every latency measured from it).
Frames for a port number that is not attached
are counted (``no_port``) and dropped. Malformed frames never raise: the
parser's rules (:mod:`lego.switch.parser`) classify or drop them and the
event counter counts them. The ingress timestamp is microseconds since the
switch started (as BMv2's), ``start_epoch_us`` maps it to wall-clock time.

If the forwarding thread dies it logs the traceback, records the error in
``failure`` and stops the switch (``run`` then raises).
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from p4.config.v1 import p4info_pb2

from lego.errors import LegoError
from lego.switch.pipeline import Pipeline
from lego.switch.ports import Port
from lego.switch.server import P4RuntimeServer

log = logging.getLogger(__name__)


@dataclass
class SwitchConfig:
    interfaces: dict[int, str] = field(default_factory=dict)  # port number -> interface
    device_id: int = 0
    grpc_addr: str = "0.0.0.0:9559"
    p4info: p4info_pb2.P4Info | None = None  # None: start without a pipeline (--no-p4)
    cpu_port: int | None = None
    batch: int = 64
    coalesce_us: int = 1000  # 0: poll again at once after every round


class SoftSwitch:
    def __init__(self, config: SwitchConfig):
        self.config = config
        self.pipeline = Pipeline()
        self.server = P4RuntimeServer(self.pipeline, config.device_id, config.p4info,
                                      config.grpc_addr)
        self.ports: dict[int, Port] = {}
        self.no_port = 0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0_ns = time.monotonic_ns()
        self.start_epoch_us = time.time_ns() // 1000

    def start(self) -> None:
        """Open the ports, start the P4Runtime server (returns once it listens), forward."""
        try:
            for port_no, ifname in sorted(self.config.interfaces.items()):
                self.ports[port_no] = Port(port_no, ifname, self.config.batch)
            self.server.start()
        except BaseException:
            self._close_ports()
            raise
        self._thread = threading.Thread(target=self._forward_guarded, name="softswitch",
                                        daemon=True)
        self._thread.start()
        log.info("software switch: device %d, ports %s, P4Runtime on %s, clock epoch %d us",
                 self.config.device_id,
                 ", ".join(f"{p}@{i}" for p, i in sorted(self.config.interfaces.items())),
                 self.server.grpc_addr, self.start_epoch_us)

    def now_us(self) -> int:
        return (time.monotonic_ns() - self._t0_ns) // 1000

    def ingress_us(self, stamps_ns: list[int]) -> list[int]:
        """Each frame's ingress timestamp on this switch's clock: its kernel receive
        time where known (a batch read at once keeps its frames' own arrival
        times, as BMv2 stamps each packet), else now."""
        now = self.now_us()
        epoch = self.start_epoch_us
        return [max(0, min(now, ns // 1000 - epoch)) if ns else now for ns in stamps_ns]

    def _forward_guarded(self) -> None:
        try:
            self._forward()
        except BaseException as exc:
            log.exception("software switch: forwarding thread died")
            self.failure = exc
            self._stop.set()

    def _forward(self) -> None:
        poller = select.poll()
        by_fd = {}
        for port in self.ports.values():
            poller.register(port.fileno(), select.POLLIN)
            by_fd[port.fileno()] = port
        process = self.pipeline.process
        ports = self.ports
        pause = self.config.coalesce_us / 1e6
        while not self._stop.is_set():
            read = 0
            for fd, _ in poller.poll(100):
                port = by_fd[fd]
                frames, stamps = port.recv_stamped()
                read = max(read, len(frames))
                if not frames:
                    continue
                out = process(frames, port.port_no, self.ingress_us(stamps))
                if not out:
                    continue
                per_port: dict[int, list[bytes]] = defaultdict(list)
                for egress, frame in out:
                    per_port[egress].append(frame)
                for egress, batch in per_port.items():
                    dest = ports.get(egress)
                    if dest is None:
                        self.no_port += len(batch)
                    else:
                        dest.send(batch)
            if pause and 0 < read < self.config.batch:
                time.sleep(pause)

    def stats(self) -> dict[str, object]:
        return {"ports": {p: port.stats() for p, port in self.ports.items()},
                "no_port": self.no_port}

    def run(self) -> None:
        """Block until stopped (or the forwarding thread fails: then raise)."""
        while not self._stop.wait(0.5):
            pass
        if self.failure is not None:
            raise LegoError(f"software switch failed: {self.failure!r}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.server.stop()
        self._close_ports()

    def _close_ports(self) -> None:
        for port in self.ports.values():
            port.close()
        self.ports = {}

    def __enter__(self) -> SoftSwitch:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
