"""P4Runtime's Python modules, generated for the protobuf runtime installed.

The ``p4runtime`` package on PyPI (1.6.0 included) ships ``_pb2`` modules written
by a protoc older than 3.19, which the current protobuf runtime (its C
implementation, upb) refuses: "Descriptors cannot be created directly". The
package does carry each ``.proto`` file's descriptor, serialized, in those
modules. :func:`regenerate` reads them (as data: the old modules are never
imported), and runs grpcio-tools' protoc on them (``--descriptor_set_in``) to
write current modules over the installed ones, the message and service
definitions unchanged. ``tools/setup-host`` runs it after every install.

p4runtime-shell pins protobuf < 3.21, so it lives in its own environment
(``make shell``, ``.venv-shell``), where the package is left as shipped.

    python -m lego.control.p4runtime_gencode      # regenerate in place
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lego.errors import LegoError

#: the package's .proto files, dependencies first
PROTOS = ("p4/config/v1/p4types", "p4/config/v1/p4info", "p4/v1/p4data", "p4/v1/p4runtime")
STAMP = ".lego-gencode"  # in the package: the protobuf version it was generated for


class GencodeError(LegoError):
    """P4Runtime's modules cannot be (re)generated or imported here."""


def package_root() -> Path:
    """The directory holding the installed ``p4`` package."""
    spec = importlib.util.find_spec("p4")
    if spec is None or not spec.submodule_search_locations:
        raise GencodeError("the p4runtime package is not installed: run tools/setup-host")
    return Path(list(spec.submodule_search_locations)[0]).parent


def serialized_descriptor(module: Path) -> bytes:
    """The serialized FileDescriptorProto a generated module carries (old style:
    ``serialized_pb=b'...'``; new style: ``AddSerializedFile(b'...')``)."""
    for node in ast.walk(ast.parse(module.read_text(), str(module))):
        if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
            return ast.literal_eval(node.value)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return ast.literal_eval(node.args[0])
    raise GencodeError(f"{module}: no serialized descriptor in it")


def descriptor_set(root: Path) -> bytes:
    """A FileDescriptorSet of the package's files and the Google ones they import."""
    from google.protobuf import any_pb2, descriptor_pb2
    from google.rpc import status_pb2

    fds = descriptor_pb2.FileDescriptorSet()
    for dep in (any_pb2, status_pb2):
        dep.DESCRIPTOR.CopyToProto(fds.file.add())
    for name in PROTOS:
        fds.file.add().MergeFromString(serialized_descriptor(root / f"{name}_pb2.py"))
    return fds.SerializeToString()


def current(root: Path) -> bool:
    from google.protobuf import __version__

    stamp = root / "p4" / STAMP
    if not stamp.exists() or stamp.read_text().strip() != __version__:
        return False
    # a reinstall of p4runtime at the same protobuf leaves the stamp, not the modules
    return all("AddSerializedFile" in (root / f"{name}_pb2.py").read_text() for name in PROTOS)


def regenerate(root: Path | None = None) -> list[Path]:
    """Write current ``_pb2`` and ``_pb2_grpc`` modules over the package's own."""
    from google.protobuf import __version__

    root = root or package_root()
    with tempfile.TemporaryDirectory() as tmp:
        fds = Path(tmp) / "p4runtime.pb"
        fds.write_bytes(descriptor_set(root))
        out = Path(tmp) / "out"
        out.mkdir()
        res = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"--descriptor_set_in={fds}",
             f"--python_out={out}", f"--grpc_python_out={out}",
             *(f"{name}.proto" for name in PROTOS)], capture_output=True, text=True)
        if res.returncode != 0:
            raise GencodeError(f"protoc failed ({res.returncode}): {res.stderr.strip()}")
        written = []
        for name in PROTOS:
            for suffix in ("_pb2.py", "_pb2_grpc.py"):
                dst = root / f"{name}{suffix}"
                shutil.copy(out / f"{name}{suffix}", dst)
                written.append(dst)
    (root / "p4" / STAMP).write_text(__version__ + "\n")
    importlib.invalidate_caches()
    return written


def main() -> int:
    try:
        root = package_root()
        if current(root):
            print(f"p4runtime_gencode: {root / 'p4'} is current")
            return 0
        written = regenerate(root)
    except GencodeError as exc:
        print(f"p4runtime_gencode: {exc}", file=sys.stderr)
        return 1
    print(f"p4runtime_gencode: {len(written)} modules regenerated in {root / 'p4'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
