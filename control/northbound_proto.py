"""The generated northbound protobuf modules, built from ``control/proto/*.proto``.

The Python is generated at build time with Debian's ``protoc`` and
``grpc_python_plugin`` (``tools/setup-host`` runs :func:`generate`; grpcio-tools
cannot be used: it needs protobuf >= 4 and the project pins protobuf 3.20 for
p4runtime-shell). The generated files sit next to the ``.proto`` (gitignored).
:func:`load` returns them, generating first when they are missing or older than
the ``.proto`` and ``protoc`` is on PATH; otherwise the error says how to build.

    python -m lego.control.northbound_proto     # (re)generate
"""

from __future__ import annotations

import importlib
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
    """Run protoc + grpc_python_plugin; write the two modules next to the proto."""
    protoc, plugin = shutil.which("protoc"), shutil.which("grpc_python_plugin")
    if not protoc or not plugin:
        raise ProtoBuildError(
            "the northbound protos are not generated and protoc / grpc_python_plugin are not "
            "on PATH: run tools/setup-host (apt packages protobuf-compiler and "
            "protobuf-compiler-grpc), or `python -m lego.control.northbound_proto`")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src" / PACKAGE
        out = Path(tmp) / "out"
        src.mkdir(parents=True)
        out.mkdir()
        shutil.copy(PROTO, src / PROTO.name)
        cmd = [protoc, f"-I{Path(tmp) / 'src'}", f"--python_out={out}", f"--grpc_out={out}",
               f"--plugin=protoc-gen-grpc={plugin}", f"{PACKAGE}/{PROTO.name}"]
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
