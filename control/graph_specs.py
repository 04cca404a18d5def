"""The brick graph of one switch port, as the BrickSpec dicts its bricks start from.

The graph of port ``p`` on its host::

    src-p (the port's frames) -> fq-p (FE) -> fm-p -> uln-p (x R) -> dec-p

On one host every hop is ``ipc://`` in the host's work directory. A ULN replica
placed on another host (``[placement].mode = "brick"``) takes its batches and
sends its scores over tcp, on ports fixed per (graph port, serial)
(:func:`tcp_port`): the controller's pure core cannot ask a remote host for a
free one.
"""

from __future__ import annotations

from pathlib import Path

from lego.control.config import Config

#: first tcp port of ``brick`` placement (below Linux's ephemeral range, 32768 on)
TCP_BASE = 24000


def tcp_port(port: int, serial: int) -> int:
    """The tcp port of graph ``port``'s decision brick (serial 0) or of its ULN
    replica ``serial`` placed on another host: 64 per graph port."""
    return TCP_BASE + 64 * (port % 128) + (0 if serial == 0 else 1 + (serial - 1) % 63)


def host_ip(address: str) -> str:
    """The host part of a management address ``HOST:PORT`` (or the bare address)."""
    return address.rpartition(":")[0] or address


def _ipc(workdir: str, role: str, port: int, serial: int, ctl: bool = False) -> str:
    suffix = "-ctl" if ctl else ""
    return f"ipc://{Path(workdir) / f'{role}-{port}-{serial}{suffix}.sock'}"


def graph_specs(cfg: Config, port: int, workdir: str, base: int, uln: int,
                standby: int) -> list[dict]:
    """Every brick of port ``port``'s graph (``uln`` routed ULN replicas and
    ``standby`` warm ones) on a host whose work directory is ``workdir``."""
    g = cfg.graph
    common = {"semantics": cfg.nf["semantics"], "model": cfg.nf["model"]}
    if cfg.nf["source"] == "feed":
        src_type, src_opts = "frame_feed", {"feed": f"ipc://{Path(workdir) / f'feed-{port}.sock'}"}
    else:
        src_type, src_opts = "packet_batching", {"interface": cfg.interface_of(port)}
    src_opts.update(batch=g["batch"], flush_ms=g["flush_ms"])
    routed = list(range(uln))

    def spec(role: str, type_: str, serial: int, inlet: bool, upstream: int,
             outlets: list[tuple[str, list[int]]], options: dict) -> dict:
        return {"node": f"{role}-{port}", "type": type_, "serial": serial,
                "control": _ipc(workdir, role, port, serial, ctl=True),
                "report": "",  # its actor's
                "inlet": _ipc(workdir, role, port, serial) if inlet else None,
                "upstream": upstream,
                "outlets": [{"target": f"{t}-{port}", "policy": "round_robin",
                             "addresses": [_ipc(workdir, t, port, s) for s in ss]}
                            for t, ss in outlets],
                "hwm": g["hwm"], "overflow": "block", "options": options, "cpus": None}

    specs = [spec("src", src_type, 0, False, 0, [("fq", [0])], src_opts),
             spec("fq", "feature_quantization", 0, True, 1, [("fm", [0])],
                  {**common, "port_base": base}),
             spec("fm", "feature_mapping", 0, True, 1, [("uln", routed)], common)]
    specs += [spec("uln", "uln", s, True, 1, [("dec", [0])], common)
              for s in range(uln + standby)]
    out = str(Path(cfg.nf["results"]) / f"port-{port}")
    specs.append(spec("dec", "decision", 0, True, uln, [],
                      {**common, "out": out, "window": g["window"],
                       "write_scores": g["write_scores"]}))
    return specs


def uln_spec(template: dict, port: int, serial: int, workdir: str) -> dict:
    """One more ULN replica of port ``port``'s graph on its own host."""
    return {**template, "serial": serial,
            "control": _ipc(workdir, "uln", port, serial, ctl=True),
            "inlet": _ipc(workdir, "uln", port, serial)}


def remote_uln_spec(template: dict, port: int, serial: int, workdir: str, address: str,
                    dec_tcp: str) -> dict:
    """One more ULN replica of port ``port``'s graph on another host (management
    ``address``, work directory ``workdir``): batches in on tcp, scores out to the
    decision brick's tcp address ``dec_tcp``; its control socket is ipc there."""
    return {**template, "serial": serial,
            "control": _ipc(workdir, "uln", port, serial, ctl=True),
            "report": "",  # its actor's
            "inlet": f"tcp://{host_ip(address)}:{tcp_port(port, serial)}",
            "outlets": [{**template["outlets"][0], "addresses": [dec_tcp]}]}
