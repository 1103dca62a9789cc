"""Generate the OIP v2 gRPC modules in service/grpc/generated from its .proto (dev time only).

``python scripts/gen_grpc.py`` rewrites ``grpc_predict_v2_pb2.py``, ``_pb2.pyi`` and
``_pb2_grpc.py`` with the pinned ``grpcio-tools`` (see pyproject's dev extra), so the
committed files are what that version writes; ``tests/grpc/test_generated.py`` regenerates
into a temporary folder and compares. The worker imports the committed files and needs no
compiler.

One change is made to protoc's output, here and only here: the messages are built in a
private descriptor pool instead of protobuf's default one. Every OIP client generated from
the same protocol (``tritonclient.grpc`` among them) registers the same ``inference.*``
names in the default pool, and protobuf refuses a name defined twice: without this, a
process that imports both (a test, an application embedding the worker) fails at import.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

__all__ = ["GENERATED", "PROTO", "generate"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PROTO = Path("service/grpc/generated/grpc_predict_v2.proto")  # relative: it names the modules
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("


def generate(out: Path) -> list[Path]:
    """Write the generated modules of ``PROTO`` into ``out``; the paths written."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # dev only: for generating

    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "grpc_tools.protoc",
            f"-I{REPO}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            str(REPO / PROTO),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO}")
        written = []
        for name in GENERATED:
            source = Path(scratch) / PROTO.parent / name
            text = source.read_text()
            if name.endswith("_pb2.py"):
                if text.count(_DEFAULT_POOL) != 1:
                    raise RuntimeError(f"{name}: protoc's output changed; check the pool edit")
                text = text.replace(_DEFAULT_POOL, _PRIVATE_POOL)
            target = out / name
            target.write_text(text)
            written.append(target)
        shutil.rmtree(scratch, ignore_errors=True)
    return written


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in generate(REPO / PROTO.parent):
        logger.info("wrote %s", path.relative_to(REPO))


if __name__ == "__main__":
    main()
