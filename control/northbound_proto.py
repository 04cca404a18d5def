"""The generated northbound protobuf modules, built from ``control/proto/*.proto``.

The Python is generated at build time with grpcio-tools' protoc, for the protobuf
runtime installed (``tools/setup-host`` runs :func:`generate`). The generated
files sit next to the ``.proto`` (gitignored). :func:`load` returns them,
generating first when they are missing or older than the ``.proto``.

    python -m lego.control.northbound_proto     # (re)generate
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from lego.errors import LegoError

PROTO_DIR = Path(__file__).resolve().parent / "proto"
PROTO = PROTO_DIR / "lego_northbound.proto"
GENERATED = (PROTO_DIR / "lego_northbound_pb2.py", PROTO_DIR / "lego_northbound_pb2_grpc.py")
PACKAGE = "lego/control/proto"  # the generated grpc module imports its messages by this path


class ProtoBuildError(LegoError):
    """The northbound protos are not generated and cannot be generated here."""


def stale() -> bool:
    return any(not p.exists() or p.stat().st_mtime < PROTO.stat().st_mtime for p in GENERATED)


def generate() -> list[Path]:
    """Run grpcio-tools' protoc; write the two modules next to the proto."""
    if importlib.util.find_spec("grpc_tools") is None:
        raise ProtoBuildError(
            "the northbound protos are not generated and grpcio-tools is not installed: "
            "run tools/setup-host")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src" / PACKAGE
        out = Path(tmp) / "out"
        src.mkdir(parents=True)
        out.mkdir()
        shutil.copy(PROTO, src / PROTO.name)
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{Path(tmp) / 'src'}",
               f"--python_out={out}", f"--grpc_python_out={out}", f"{PACKAGE}/{PROTO.name}"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise ProtoBuildError(f"protoc failed ({res.returncode}): {res.stderr.strip()}")
        written = []
        for name in (p.name for p in GENERATED):
            shutil.copy(out / PACKAGE / name, PROTO_DIR / name)
            written.append(PROTO_DIR / name)
    importlib.invalidate_caches()
    return written


def load() -> tuple[ModuleType, ModuleType]:
    """(messages, services) modules; generated first when missing or stale."""
    if stale():
        generate()
    try:
        pb2 = importlib.import_module("lego.control.proto.lego_northbound_pb2")
        grpc_mod = importlib.import_module("lego.control.proto.lego_northbound_pb2_grpc")
    except ImportError as exc:
        raise ProtoBuildError(f"the generated northbound modules do not import ({exc}); "
                              "regenerate: python -m lego.control.northbound_proto") from exc
    return pb2, grpc_mod


if __name__ == "__main__":
    try:
        for p in generate():
            print(f"generated {p}")
    except ProtoBuildError as exc:
        print(f"northbound_proto: {exc}", file=sys.stderr)
        sys.exit(1)
