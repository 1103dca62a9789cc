"""PMML to ONNX through sklearn-pmml-model (extra ``hotswap[pmml]``).

sklearn-pmml-model reads a PMML document into a scikit-learn estimator, and
skl2onnx converts that. Its decision trees use their own tree class, which
skl2onnx cannot read, so a tree is rebuilt as a plain scikit-learn tree from
the same parsed nodes; other models are converted with their scikit-learn
parent's converter. Either way the parity check compares ONNX Runtime with
sklearn-pmml-model's own predictions. Only numeric inputs are accepted:
categorical fields and PMML transformations are refused rather than guessed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.core.convert.base import ConversionError, Converted, require
from service.core.convert.sklearn import sklearn_to_onnx

__all__ = ["pmml_to_onnx"]

logger = logging.getLogger(__name__)

_TREE_LEAF = -1
_TREE_UNDEFINED = -2


def _input_names(est: Any) -> list[str]:
    """The model's input fields in column order, refusing the ones we cannot serve."""
    target = est.target_field
    names: list[str] = []
    for name, element in est.fields.items():
        if element is target:
            continue
        if element.tag != "DataField":
            raise ConversionError(f"PMML derived field {name!r}: transformations not supported")
        numeric = element.get("dataType") in ("double", "float", "integer")
        if element.get("optype") != "continuous" or not numeric:
            raise ConversionError(f"PMML field {name!r} is not continuous numeric; not supported")
        names.append(str(name))
    return names


def _depth(left: list[int], right: list[int]) -> int:
    deepest, stack = 0, [(0, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if left[node] != _TREE_LEAF:
            stack += [(left[node], depth + 1), (right[node], depth + 1)]
    return deepest


def _rebuild_tree(est: Any, width: int, classifier: bool) -> Any:
    """A plain scikit-learn tree with the nodes sklearn-pmml-model parsed."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
    from sklearn.tree._tree import NODE_DTYPE, Tree
    from sklearn_pmml_model.tree.tree import construct_tree, unflatten

    tree_model = est.root.find("TreeModel")
    first = tree_model.find("Node")
    if tree_model.get("splitCharacteristic") != "binarySplit":
        first = unflatten(first)
    classes = est.classes_ if classifier else None
    # sklearn-pmml-model's regression trees are parsed with this factor (see its tree.py).
    nodes, values = construct_tree(
        first, classes, est.field_mapping, rescale_factor=1 if classes is not None else 0.1
    )
    array = np.zeros(len(nodes), dtype=NODE_DTYPE)
    for i, (left, right, feature, split, impurity, count, weighted) in enumerate(nodes):
        leaf = left == _TREE_LEAF
        if not leaf and not isinstance(split, float | np.floating):
            raise ConversionError("PMML tree has a categorical split; not supported")
        array[i]["left_child"], array[i]["right_child"] = left, right
        array[i]["feature"] = _TREE_UNDEFINED if leaf else feature
        array[i]["threshold"] = float(_TREE_UNDEFINED) if leaf else float(split)
        array[i]["impurity"], array[i]["n_node_samples"] = impurity, count
        array[i]["weighted_n_node_samples"] = weighted
    value = np.asarray(values, dtype=np.float64).reshape(len(nodes), 1, -1)
    if classifier:  # scikit-learn >= 1.4 keeps class fractions in the nodes
        totals = value.sum(axis=2, keepdims=True)
        value = np.divide(value, totals, out=np.zeros_like(value), where=totals > 0)
    n_classes = np.array([value.shape[2]], dtype=np.intp)
    tree = Tree(width, n_classes, 1)
    depth = _depth(list(array["left_child"]), list(array["right_child"]))
    tree.__setstate__(
        {"max_depth": depth, "node_count": len(nodes), "nodes": array, "values": value}
    )
    plain = DecisionTreeClassifier() if classifier else DecisionTreeRegressor()
    plain.tree_ = tree
    plain.n_features_in_ = width
    plain.n_outputs_ = 1
    plain.max_features_ = width
    if classifier:
        plain.classes_ = np.asarray(est.classes_)
        plain.n_classes_ = len(est.classes_)
    return plain


def _register_as_parent(est: Any) -> None:
    """Convert a sklearn-pmml-model class with its scikit-learn parent's converter."""
    from skl2onnx import get_model_alias, update_registered_converter
    from skl2onnx.common._registration import get_converter, get_shape_calculator

    parent = next(
        (c for c in type(est).__mro__[1:] if c.__module__.split(".")[0] == "sklearn"), None
    )
    alias = get_model_alias(parent) if parent is not None else None
    if parent is None or alias is None:
        raise ConversionError(f"no ONNX converter for PMML model {type(est).__name__}")
    converter = get_converter(alias)
    update_registered_converter(
        type(est),
        f"Pmml{parent.__name__}",
        get_shape_calculator(alias),
        converter._fct,
        options=converter.get_allowed_options(),
    )


def pmml_to_onnx(path: Path, sample_rows: npt.ArrayLike | None = None) -> Converted:
    """Read a PMML file, convert it to ONNX and check parity with sklearn-pmml-model."""
    require("pmml")
    from sklearn_pmml_model.auto_detect import auto_detect_estimator
    from sklearn_pmml_model.tree import PMMLTreeClassifier, PMMLTreeRegressor

    try:
        est = auto_detect_estimator(str(path))
    except Exception as exc:  # the library raises bare Exception for unsupported documents
        raise ConversionError(f"sklearn-pmml-model cannot read {path.name}: {exc}") from exc
    names = _input_names(est)
    width = len(names)
    if not width:
        raise ConversionError(f"{path.name} has no input fields")
    classifier = hasattr(est, "classes_")
    if isinstance(est, PMMLTreeClassifier | PMMLTreeRegressor):
        convertible = _rebuild_tree(est, width, classifier)
    else:
        est.n_features_in_ = width  # set by the library only on old scikit-learn
        _register_as_parent(est)
        convertible = est
    converted = sklearn_to_onnx(
        convertible, sample_rows, reference=est, source=f"PMML {type(est).__name__}"
    )
    return Converted(
        converted.onnx,
        converted.width,
        converted.classes,
        converted.sample_labels,
        converted.max_abs_diff,
        feature_names=names,
        source=converted.source,
    )
