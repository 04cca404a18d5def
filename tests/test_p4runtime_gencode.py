"""P4Runtime's modules as setup-host leaves them: generated for the protobuf runtime
installed (its C implementation), with the package's own definitions unchanged."""

from __future__ import annotations

import shutil

import pytest

from lego.control import p4runtime_gencode as gen


def test_the_installed_modules_run_on_protobufs_c_implementation():
    from google.protobuf.internal import api_implementation
    from p4.v1 import p4runtime_pb2

    assert api_implementation.Type() == "upb"
    assert gen.current(gen.package_root())
    req = p4runtime_pb2.ReadRequest(device_id=7)
    req.entities.add().counter_entry.counter_id = 42
    assert p4runtime_pb2.ReadRequest.FromString(req.SerializeToString()) == req


def test_regenerating_keeps_every_definition(tmp_path):
    """Regenerated from a copy of the installed package, each module carries the
    same descriptor bytes as the one the process imported."""
    from p4.config.v1 import p4info_pb2, p4types_pb2
    from p4.v1 import p4data_pb2, p4runtime_pb2

    root = gen.package_root()
    shutil.copytree(root / "p4", tmp_path / "p4")
    written = gen.regenerate(tmp_path)
    assert len(written) == 2 * len(gen.PROTOS)
    for name, module in zip(gen.PROTOS, (p4types_pb2, p4info_pb2, p4data_pb2, p4runtime_pb2),
                            strict=True):
        got = gen.serialized_descriptor(tmp_path / f"{name}_pb2.py")
        assert got == module.DESCRIPTOR.serialized_pb, name


def test_an_old_style_module_gives_its_descriptor_and_a_module_without_one_is_refused(
        tmp_path):
    old = tmp_path / "old_pb2.py"
    old.write_text("DESCRIPTOR = _descriptor.FileDescriptor(name='x.proto', "
                   "serialized_pb=b'\\n\\x07x.proto')\n")
    assert gen.serialized_descriptor(old) == b"\n\x07x.proto"
    (tmp_path / "none_pb2.py").write_text("X = 1\n")
    with pytest.raises(gen.GencodeError, match="no serialized descriptor"):
        gen.serialized_descriptor(tmp_path / "none_pb2.py")
