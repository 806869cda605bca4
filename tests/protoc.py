"""Compile another project's .proto at test time and import the result in a
descriptor pool of its own, so that its symbols (which are ours too, by design:
the wire formats are the same) do not collide with prism_backends' modules."""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from types import ModuleType
from unittest import mock

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_tools import protoc  # type: ignore[import-untyped]


def compile_proto(proto: Path, out: Path) -> None:
    shutil.copy(proto, out / proto.name)
    well_known = resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={out}",
            f"--proto_path={well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(out / proto.name),
        ]
    )
    assert status == 0, f"protoc failed on {proto}"


def import_privately(
    out: Path, names: tuple[str, ...], dependencies: Iterable[FileDescriptor]
) -> list[ModuleType]:
    """Import the generated modules ``names`` from ``out`` with their descriptors
    in a fresh pool (holding ``dependencies``), leaving neither importable after."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in dependencies:
        pool.AddSerializedFile(dependency.serialized_pb)
    shadowed = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    try:
        with (
            mock.patch.object(descriptor_pool, "Default", return_value=pool),
            mock.patch.object(sys, "path", [str(out), *sys.path]),
        ):
            importlib.invalidate_caches()
            modules = [importlib.import_module(name) for name in names]
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(shadowed)
    assert Path(modules[0].__file__ or "").parent == out
    assert modules[0].DESCRIPTOR.pool is pool
    return modules
