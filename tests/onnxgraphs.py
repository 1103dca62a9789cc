"""Small ONNX graphs for tests: a model taking ``x`` [batch, 2] floats, giving ``y``.

Valid ONNX that misbehaves in ways a converter never produces but a publisher can:
rows that are not the batch's, runs that never end.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto, helper

__all__ = ["endless_body", "endless_for_ones", "rows_model"]


def rows_model(nodes: list[Any], inits: list[Any], batch: int | None = None) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph(nodes, "rows", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def endless_for_ones() -> bytes:
    """y = x after a Loop of max(x) * 10^12 turns: no turn for the warm-up's zeros, hours
    for a record holding a 1 (a count taken from the input: valid, and data-dependent)."""
    t = TensorProto
    looped = helper.make_node("Loop", ["turns", "go", "x"], ["y"], body=endless_body())
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["most"], keepdims=0),
        helper.make_node("Mul", ["most", "scale"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["turns"], to=t.INT64),
        looped,
    ]
    inits = [
        helper.make_tensor("scale", t.FLOAT, [], [1e12]),
        helper.make_tensor("go", t.BOOL, [], [True]),
    ]
    return rows_model(nodes, inits)


def endless_body() -> Any:
    t = TensorProto
    return helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["v_in"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", t.INT64, []),
            helper.make_tensor_value_info("cond_in", t.BOOL, []),
            helper.make_tensor_value_info("v_in", t.FLOAT, [None, 2]),
        ],
        [
            helper.make_tensor_value_info("cond_out", t.BOOL, []),
            helper.make_tensor_value_info("v_out", t.FLOAT, [None, 2]),
        ],
    )
