"""``lego switch``: the software target, with ``simple_switch_grpc``'s command line.

    lego switch -i 1@veth1 -i 2@veth2 [--device-id 0] [--log-console] lego.json \\
        -- --grpc-server-addr 0.0.0.0:9559 [--cpu-port 510]

The JSON positional is accepted for compatibility and not read: the target runs
``lego.p4``'s model and serves the committed P4Info (or ``--p4info FILE``, which
must describe ``lego.p4``). ``--no-p4`` starts without a pipeline, as
simple_switch_grpc does; a controller then sets it. Target options may come
before or after ``--``. :func:`switch_config` is the pure part (arguments ->
:class:`~lego.switch.target.SwitchConfig`); ``cmd_switch`` only runs it.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
from pathlib import Path

from lego.cli_args import non_negative_int
from lego.errors import ConfigError

_ADDR = re.compile(r"^(\[[0-9a-fA-F:]+\]|[\w.\-]+):(\d{1,5})$")


def port_iface(text: str) -> tuple[int, str]:
    """``PORT@IFACE`` with PORT in 0..510."""
    port, sep, iface = text.partition("@")
    if not sep or not iface or not port.isdigit() or not 0 <= int(port) <= 510:
        raise argparse.ArgumentTypeError(f"expected PORT@IFACE with PORT in 0..510, got {text!r}")
    return int(port), iface


def grpc_address(text: str) -> str:
    """``HOST:PORT``."""
    m = _ADDR.match(text)
    if not m or int(m.group(2)) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def _add_target_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    p.add_argument("--grpc-server-addr", type=grpc_address, metavar="HOST:PORT",
                   default=argparse.SUPPRESS if suppress else "0.0.0.0:9559",
                   help="P4Runtime server address (default 0.0.0.0:9559)")
    p.add_argument("--cpu-port", type=non_negative_int, metavar="PORT", default=default,
                   help="accepted; packet-in/out is not modelled")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "switch", help="the software P4Runtime target (simple_switch_grpc's command line)",
        description=__doc__.split("\n\n")[0])
    p.add_argument("-i", "--interface", action="append", type=port_iface, default=[],
                   metavar="PORT@IFACE", dest="interfaces", help="attach IFACE as PORT")
    p.add_argument("--device-id", type=non_negative_int, default=0, metavar="N")
    p.add_argument("--no-p4", action="store_true", help="start without a pipeline")
    p.add_argument("--p4info", type=Path, metavar="FILE",
                   help="P4Info text file to serve (default: the committed lego.p4info.txtpb)")
    p.add_argument("--log-console", action="store_true", help="log to the console (INFO)")
    p.add_argument("--thrift-port", type=non_negative_int, metavar="PORT",
                   help="accepted and ignored (no Thrift here)")
    p.add_argument("--batch", type=non_negative_int, default=64, metavar="N",
                   help="frames per recvmmsg/sendmmsg (default 64)")
    p.add_argument("--coalesce-us", type=non_negative_int, default=1000, metavar="US",
                   help="pause after a round that read less than a batch, so that "
                        "frames are taken together (default 1000; 0: none)")
    _add_target_options(p, suppress=False)
    p.add_argument("rest", nargs="*", metavar="JSON [-- TARGET-OPTIONS]",
                   help="the BMv2 JSON (accepted, not read), then target options")
    p.set_defaults(func=cmd_switch)


def switch_config(args: argparse.Namespace):
    """Arguments -> SwitchConfig (pure: reads the P4Info file, opens nothing)."""
    from lego.p4src.p4info import P4INFO_PATH, load_p4info
    from lego.switch.server import verify_p4info
    from lego.switch.target import SwitchConfig

    rest = list(args.rest)
    json_path = None
    if rest and not rest[0].startswith("-"):
        json_path = rest.pop(0)
    if rest:
        target = argparse.ArgumentParser(prog="lego switch ... --", add_help=False,
                                         exit_on_error=False)
        _add_target_options(target, suppress=True)
        try:
            extra = target.parse_args(rest)
        except (argparse.ArgumentError, SystemExit) as exc:
            raise ConfigError(f"switch: bad target options {' '.join(rest)!r}: {exc}") from None
        for k, v in vars(extra).items():
            setattr(args, k, v)
    if args.no_p4 and (json_path or args.p4info):
        raise ConfigError("switch: --no-p4 contradicts a JSON or --p4info: give one of them")
    if not args.no_p4 and json_path is None and args.p4info is None:
        raise ConfigError("switch: give the JSON (or --p4info FILE), or --no-p4")
    ports = {}
    for port, iface in args.interfaces:
        if port in ports:
            raise ConfigError(f"switch: port {port} given twice ({ports[port]}, {iface})")
        ports[port] = iface
    p4info = None
    if not args.no_p4:
        p4info = load_p4info(args.p4info or P4INFO_PATH)
        problems = verify_p4info(p4info)
        if problems:
            raise ConfigError(f"switch: P4Info {args.p4info} is not lego.p4's: {problems[0]}")
    return SwitchConfig(interfaces=ports, device_id=args.device_id,
                        grpc_addr=args.grpc_server_addr, p4info=p4info,
                        cpu_port=args.cpu_port, batch=max(1, args.batch),
                        coalesce_us=args.coalesce_us)


def cmd_switch(args: argparse.Namespace) -> int:
    from lego.switch.target import SoftSwitch

    config = switch_config(args)
    if args.log_console:
        logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    switch = SoftSwitch(config)
    switch.start()

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        switch.run()
    finally:
        switch.stop()
    return 0
