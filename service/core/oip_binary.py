"""The Open Inference Protocol v2 binary tensor extension: pure encode/decode functions.

A request (or response) that uses it is a JSON header followed by raw tensor
bytes; the ``Inference-Header-Content-Length`` HTTP header says where the JSON
ends. Each tensor sent in binary says its byte count in
``parameters.binary_data_size``, and the tensors follow the header in order.
Numeric tensors are their elements in row-major order, little-endian; BOOL is
one byte per element; a BYTES tensor is, per element, a 4-byte little-endian
length followed by that many bytes.

Nothing here knows HTTP or models: every function takes bytes or arrays and
returns bytes or arrays, raising :class:`BinaryFormatError` with a reason a
client can act on when the input is malformed.
"""

from __future__ import annotations

import logging
import math
import re
import struct
import zlib
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

__all__ = [
    "DATATYPES",
    "BinaryFormatError",
    "BodyTooLarge",
    "decode_bytes",
    "decode_tensor",
    "decompress",
    "element_count",
    "encode_bytes",
    "encode_tensor",
    "from_json",
    "header_length",
    "to_json",
]

logger = logging.getLogger(__name__)

# OIP v2 datatype -> numpy dtype, little-endian as the protocol requires.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_LENGTH = struct.Struct("<I")
_DIGITS = re.compile(r"[0-9]{1,19}")
_JSON_SLICE = 1 << 16  # elements converted per numpy call: lets other threads take the GIL


class BinaryFormatError(ValueError):
    """The request's tensors or headers are malformed; the message says how."""


class BodyTooLarge(ValueError):
    """A (decompressed) body is over the configured limit."""


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's length (``Inference-Header-Content-Length``), checked against the body."""
    if value is None:
        return None
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        raise BinaryFormatError(
            f"Inference-Header-Content-Length {value[:40]!r} is not a non-negative integer"
        )
    length = int(text)
    if length > body_size:
        raise BinaryFormatError(
            f"Inference-Header-Content-Length {length} is beyond the body's {body_size} bytes"
        )
    return length


def element_count(shape: Sequence[int]) -> int:
    """Elements in a tensor of ``shape``; refuses negative dimensions."""
    if any(d < 0 for d in shape):
        raise BinaryFormatError(f"shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def _dtype(datatype: str) -> np.dtype[Any]:
    try:
        return DATATYPES[datatype]
    except KeyError:
        known = ", ".join([*DATATYPES, "BYTES"])
        raise BinaryFormatError(f"datatype {datatype!r} is not supported ({known})") from None


def decode_bytes(raw: bytes | memoryview, count: int) -> npt.NDArray[np.object_]:
    """``count`` length-prefixed elements from ``raw``, which they must fill exactly."""
    items: list[bytes] = []
    view = memoryview(raw)
    offset, size = 0, len(view)
    while offset < size:
        if len(items) == count:
            raise BinaryFormatError(f"BYTES data has {size - offset} bytes after {count} elements")
        if offset + 4 > size:
            raise BinaryFormatError(f"BYTES element {len(items)} has a truncated length prefix")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise BinaryFormatError(
                f"BYTES element {len(items)} claims {length} bytes; {size - offset} remain"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise BinaryFormatError(f"BYTES data holds {len(items)} elements, the shape {count}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def decode_tensor(
    datatype: str,
    shape: Sequence[int],
    raw: bytes | memoryview,
    size_name: str = "binary_data_size",
) -> npt.NDArray[Any]:
    """The tensor ``raw`` holds, shaped ``shape``; its size must match shape and datatype.

    ``size_name`` names the size in a refusal as the client knows it (HTTP's
    ``binary_data_size``, gRPC's ``raw_input_contents``).
    """
    count = element_count(shape)
    if datatype == "BYTES":
        return decode_bytes(raw, count).reshape(tuple(shape))
    dtype = _dtype(datatype)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise BinaryFormatError(
            f"{size_name} {len(raw)} does not match shape {list(shape)} of {datatype} "
            f"({expected} bytes)"
        )
    if datatype == "BOOL" and np.frombuffer(raw, dtype=np.uint8).max(initial=0) > 1:
        raise BinaryFormatError("BOOL data holds bytes other than 0 and 1")
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def from_json(datatype: str, shape: Sequence[int], data: list[Any]) -> npt.NDArray[Any]:
    """A tensor from its JSON ``data`` (flat or nested, row-major)."""
    count = element_count(shape)
    if datatype == "BYTES":
        flat = _flatten(data)
        if not all(isinstance(x, str) for x in flat):
            raise BinaryFormatError("BYTES data in JSON must be strings")
        array = np.empty(len(flat), dtype=object)
        array[:] = [x.encode() for x in flat]
    else:
        dtype = _dtype(datatype)
        _check_json_values(
            datatype, data if data and not isinstance(data[0], list) else _rows(data)
        )
        try:
            if data and not isinstance(data[0], list):  # flat: convert in slices
                array = np.empty(len(data), dtype=dtype)
                for start in range(0, len(data), _JSON_SLICE):
                    array[start : start + _JSON_SLICE] = data[start : start + _JSON_SLICE]
            else:
                array = np.asarray(data, dtype=dtype).reshape(-1)
        except (ValueError, TypeError, OverflowError):
            raise BinaryFormatError(f"data does not hold {datatype} values") from None
    if array.size != count:
        raise BinaryFormatError(
            f"data holds {array.size} values; shape {list(shape)} needs {count}"
        )
    return array.reshape(tuple(shape))


def _check_json_values(datatype: str, flat: list[Any]) -> None:
    """JSON values of ``datatype``'s kind, as Triton holds them: numbers for numbers (not
    ``"13.2"``, which numpy would read), integers for integers (not ``14.1``, which it would
    cut to 14), booleans for ``BOOL``. A client's mistake is a 400, not another score."""
    kinds = set(map(type, flat))
    if datatype == "BOOL":
        wrong = kinds - {bool}
    elif datatype.startswith(("INT", "UINT")):
        wrong = kinds - {int, float}
        if float in kinds and any(
            x != int(x) for x in flat if type(x) is float and math.isfinite(x)
        ):
            raise BinaryFormatError(f"data holds values that are not integers for {datatype}")
    else:
        wrong = kinds - {int, float}
    if wrong:
        names = sorted(t.__name__ for t in wrong)
        raise BinaryFormatError(f"data holds {', '.join(names)} values, not {datatype} values")


def _rows(data: list[Any]) -> list[Any]:
    """The values of ``[[...], [...]]`` (the usual nested form) at C speed; deeper or
    ragged nesting through :func:`_flatten`."""
    try:
        flat = list(chain.from_iterable(data))
    except TypeError:  # a value beside the rows
        return _flatten(data)
    return _flatten(data) if list in set(map(type, flat)) else flat


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _element(item: Any) -> bytes:
    """One BYTES element: bytes as they are, text as UTF-8, and a map or a list (a ZipMap's
    ``{class: probability}`` row) as JSON, keys as strings: not Python's ``repr``."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, dict | list):
        return orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return str(item).encode()


def encode_bytes(array: npt.NDArray[Any]) -> bytes:
    """A BYTES tensor as length-prefixed elements (see :func:`_element`)."""
    parts: list[bytes] = []
    for item in array.reshape(-1).tolist():
        value = _element(item)
        parts += (_LENGTH.pack(len(value)), value)
    return b"".join(parts)


def encode_tensor(array: npt.NDArray[Any], datatype: str) -> bytes:
    """``array`` in the binary form of ``datatype``."""
    if datatype == "BYTES":
        return encode_bytes(array)
    return np.ascontiguousarray(array, dtype=_dtype(datatype)).tobytes()


def to_json(array: npt.NDArray[Any], datatype: str) -> npt.NDArray[Any] | list[Any]:
    """``array`` flattened for a JSON body (numpy arrays are serialized by orjson as is)."""
    if datatype == "BYTES":
        return [_element(x).decode("utf-8", "replace") for x in array.reshape(-1).tolist()]
    return np.ascontiguousarray(array, dtype=_dtype(datatype)).reshape(-1)


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded per ``Content-Encoding`` (gzip, deflate), at most ``limit`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BinaryFormatError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BinaryFormatError(f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"decompressed body is over the limit of {limit} bytes")
    if not inflater.eof:
        raise BinaryFormatError(f"body is truncated {encoding}")
    if inflater.unused_data:  # a second member, or bytes after the stream: not ignored
        raise BinaryFormatError(f"body has {len(inflater.unused_data)} bytes after the {encoding}")
    return out
