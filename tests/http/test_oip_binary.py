"""The binary tensor codec alone: every datatype round-trips, every malformation is named."""

from __future__ import annotations

import gzip
import re
import struct
import zlib

import numpy as np
import pytest

from service.core import oip_binary as codec
from service.http.oip_infer import BadRequest, decode_request

AUTO = "auto"  # the header length is that of the JSON part
NUMERIC = [
    *("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"),
    *("FP16", "FP32", "FP64"),
]


def _sample(datatype: str) -> np.ndarray:
    values = np.arange(-3, 3).reshape(2, 3)
    if datatype == "BOOL":
        return values > 0
    if datatype.startswith("U"):
        values = values + 3
    return values.astype(codec.DATATYPES[datatype])


@pytest.mark.parametrize("datatype", NUMERIC)
def test_numeric_round_trip(datatype: str) -> None:
    array = _sample(datatype)
    raw = codec.encode_tensor(array, datatype)
    assert len(raw) == array.size * codec.DATATYPES[datatype].itemsize
    back = codec.decode_tensor(datatype, [2, 3], raw)
    assert back.dtype == codec.DATATYPES[datatype]
    np.testing.assert_array_equal(back, array)


def test_numeric_is_little_endian_row_major() -> None:
    raw = codec.encode_tensor(np.array([[1, 2], [3, 4]], dtype=">i4"), "INT32")
    assert raw == struct.pack("<4i", 1, 2, 3, 4)
    assert codec.encode_tensor(np.array([1.5], dtype=np.float64), "FP32") == struct.pack("<f", 1.5)


def test_bytes_round_trip() -> None:
    array = np.array([[b"", b"a\x00b"], ["caf\u00e9", b"\xff"]], dtype=object)
    raw = codec.encode_tensor(array, "BYTES")
    assert raw[:4] == b"\x00\x00\x00\x00"
    assert raw[4:11] == struct.pack("<I", 3) + b"a\x00b"
    back = codec.decode_tensor("BYTES", [2, 2], raw)
    assert back.shape == (2, 2)
    assert back.tolist() == [[b"", b"a\x00b"], ["caf\u00e9".encode(), b"\xff"]]


def test_json_forms() -> None:
    np.testing.assert_array_equal(
        codec.from_json("INT64", [2, 2], [[1, 2], [3, 4]]), np.array([[1, 2], [3, 4]])
    )
    flat = codec.from_json("FP32", [1, 3], [1, 2.5, 3])
    assert flat.dtype == np.float32
    assert codec.from_json("BYTES", [2], ["a", "\u00e9"]).tolist() == [b"a", "\u00e9".encode()]
    assert codec.to_json(np.array([b"x", "y"], dtype=object), "BYTES") == ["x", "y"]
    assert list(codec.to_json(np.array([[1.5, 2]]), "FP32")) == [1.5, 2.0]


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "reason"),
    [
        ("FP32", [1, 13], b"\x00" * 51, "does not match shape [1, 13] of FP32 (52 bytes)"),
        ("INT64", [2], b"\x00" * 24, "does not match shape [2] of INT64 (16 bytes)"),
        ("FP32", [-1, 13], b"", "negative dimension"),
        ("BF16", [1], b"\x00\x00", "datatype 'BF16' is not supported"),
        ("COMPLEX", [1], b"\x00", "is not supported"),
        ("BOOL", [2], b"\x01\x07", "bytes other than 0 and 1"),
        ("BYTES", [1], b"\x05\x00", "truncated length prefix"),
        ("BYTES", [1], b"\x05\x00\x00\x00abc", "claims 5 bytes; 3 remain"),
        ("BYTES", [2], b"\x01\x00\x00\x00a", "holds 1 elements, the shape 2"),
        ("BYTES", [1], b"\x01\x00\x00\x00ab", "1 bytes after 1 elements"),
        ("BYTES", [1], b"\xff\xff\xff\xff", "claims 4294967295 bytes"),
    ],
)
def test_malformed_tensors_are_named(
    datatype: str, shape: list[int], raw: bytes, reason: str
) -> None:
    with pytest.raises(codec.BinaryFormatError, match=re.escape(reason)):
        codec.decode_tensor(datatype, shape, raw)


def test_huge_shape_is_refused_without_allocating() -> None:
    with pytest.raises(codec.BinaryFormatError, match="does not match"):
        codec.decode_tensor("FP64", [10**12, 10**6], b"\x00" * 8)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-5", "not a non-negative integer"),
        ("abc", "not a non-negative integer"),
        ("1e3", "not a non-negative integer"),
        ("", "not a non-negative integer"),
        ("99999999999999999999999", "not a non-negative integer"),
        ("\u0661\u0662", "not a non-negative integer"),  # Arabic-Indic digits
        ("101", "beyond the body's 100 bytes"),
    ],
)
def test_bad_header_length(value: str, reason: str) -> None:
    with pytest.raises(codec.BinaryFormatError, match=reason):
        codec.header_length(value, 100)


def test_header_length_ok() -> None:
    assert codec.header_length(None, 5) is None
    assert codec.header_length(" 5 ", 5) == 5


_FP32 = b'{"inputs": [{"name": "X", "shape": [%d], "datatype": "FP32", %s}]}'
_ONE = struct.pack("<f", 1.0)


@pytest.mark.parametrize(
    ("head", "tail", "header", "reason"),
    [
        (b"{not json", b"", AUTO, "request header is not valid JSON"),
        (b'{"inputs": []}', b"", AUTO, "invalid request at inputs"),
        (b'{"inputs": [{"name": "X"}]}', b"", None, "invalid request at inputs.0.shape"),
        (_FP32 % (1, b'"id": "a"'), b"", None, "has neither data nor binary_data_size"),
        (
            _FP32 % (1, b'"parameters": {"binary_data_size": 4}'),
            b"",
            None,
            "no Inference-Header-Content-Length header",
        ),
        (
            _FP32 % (1, b'"parameters": {"binary_data_size": 4}'),
            _ONE,
            None,
            "not valid JSON (binary tensors need the Inference-Header-Content-Length header)",
        ),
        (
            _FP32 % (1, b'"parameters": {"binary_data_size": -4}'),
            _ONE,
            AUTO,
            "binary_data_size -4 is not a size",
        ),
        (
            _FP32 % (1, b'"parameters": {"binary_data_size": "4"}'),
            _ONE,
            AUTO,
            "binary_data_size '4' is not a size",
        ),
        (
            _FP32 % (1, b'"parameters": {"binary_data_size": 8}'),
            _ONE,
            AUTO,
            "binary_data_size 8 is beyond the body (4 bytes left)",
        ),
        (
            _FP32 % (1, b'"data": [1], "parameters": {"binary_data_size": 4}'),
            _ONE,
            AUTO,
            "has both data and binary_data_size",
        ),
        (
            _FP32 % (1, b'"parameters": {"binary_data_size": 4}'),
            _ONE + b"junk",
            AUTO,
            "4 bytes after the tensors belong to no input",
        ),
        (_FP32 % (1, b'"data": [1]'), b"trailing", AUTO, "8 bytes after the tensors"),
        (
            _FP32 % (2, b'"parameters": {"binary_data_size": 4}'),
            _ONE,
            AUTO,
            "does not match shape [2] of FP32 (8 bytes)",
        ),
        (b"{}", b"", "3", "beyond the body's 2 bytes"),
        (b"{}", b"", "-1", "not a non-negative integer"),
        (b"{}", b"", "0x2", "not a non-negative integer"),
    ],
)
def test_malformed_requests_are_bad_requests(
    head: bytes, tail: bytes, header: str | None, reason: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_request(head + tail, str(len(head)) if header is AUTO else header)
    assert reason in str(caught.value)


def test_binary_and_json_inputs_decode_alike() -> None:
    header = (
        b'{"inputs": [{"name": "X", "shape": [1, 2], "datatype": "FP64",'
        b' "parameters": {"binary_data_size": 16}}]}'
    )
    binary = decode_request(header + struct.pack("<2d", 1.5, -2), str(len(header)))
    plain = decode_request(
        b'{"inputs": [{"name": "X", "shape": [1, 2], "datatype": "FP64", "data": [1.5, -2]}]}',
        None,
    )
    np.testing.assert_array_equal(binary.tensors[0], plain.tensors[0])
    assert binary.tensors[0].dtype == np.float64


def test_decompress_is_bounded() -> None:
    body = b"x" * 10_000
    assert codec.decompress(gzip.compress(body), "gzip", 10_000) == body
    assert codec.decompress(zlib.compress(body), "deflate", 10_000) == body
    assert codec.decompress(body, "identity", 1) == body
    with pytest.raises(codec.BodyTooLarge):
        codec.decompress(gzip.compress(b"\x00" * 10_000_000), "gzip", 1_000_000)
    with pytest.raises(codec.BinaryFormatError, match="not valid gzip"):
        codec.decompress(b"not gzip", "gzip", 100)
    with pytest.raises(codec.BinaryFormatError, match="truncated"):
        codec.decompress(gzip.compress(body)[:-12], "gzip", 100_000)
    with pytest.raises(codec.BinaryFormatError, match="'br' is not supported"):
        codec.decompress(body, "br", 100_000)
