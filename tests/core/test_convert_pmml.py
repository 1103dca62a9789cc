"""PMML to ONNX: hand-written documents whose answers are worked out here by hand.

The converter checks ONNX against sklearn-pmml-model's reading of the file;
these tests check the served ONNX model against the PMML semantics directly
(the tree's score distributions, the regression's formula).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from service.core.convert import ConversionError, MissingExtra, convert_file
from service.core.messages import encode_model_message, parse_model_message
from service.core.registry import ModelRegistry
from service.core.runtime import OnnxModel
from service.tools.publish import PublishRequest, build_message

pytest.importorskip("sklearn_pmml_model")

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">"""


def _leaf(node_id: int, score: str, op: str, field: str, value: str, counts: list[int]) -> str:
    dist = "".join(
        f'<ScoreDistribution value="{c}" recordCount="{n}"/>' for c, n in zip("abc", counts)
    )
    return (
        f'<Node id="{node_id}" score="{score}" recordCount="{sum(counts)}">'
        f'<SimplePredicate field="{field}" operator="{op}" value="{value}"/>{dist}</Node>'
    )


# x1 <= 0.5 and x2 <= 1.5 -> a (8/2/0); x1 <= 0.5 and x2 > 1.5 -> b (1/3/0); x1 > 0.5 -> c (0/1/9)
TREE = f"""{HEAD}
  <Header description="two-level tree"/>
  <DataDictionary numberOfFields="3">
    <DataField name="x1" optype="continuous" dataType="double"/>
    <DataField name="x2" optype="continuous" dataType="double"/>
    <DataField name="species" optype="categorical" dataType="string">
      <Value value="a"/><Value value="b"/><Value value="c"/>
    </DataField>
  </DataDictionary>
  <TreeModel functionName="classification" splitCharacteristic="binarySplit">
    <MiningSchema>
      <MiningField name="x1"/><MiningField name="x2"/>
      <MiningField name="species" usageType="target"/>
    </MiningSchema>
    <Node id="0" recordCount="24"><True/>
      <Node id="1" recordCount="14">
        <SimplePredicate field="x1" operator="lessOrEqual" value="0.5"/>
        {_leaf(3, "a", "lessOrEqual", "x2", "1.5", [8, 2, 0])}
        {_leaf(4, "b", "greaterThan", "x2", "1.5", [1, 3, 0])}
      </Node>
      {_leaf(2, "c", "greaterThan", "x1", "0.5", [0, 1, 9])}
    </Node>
  </TreeModel>
</PMML>
"""

# y = 4 + a - 2 b + 0.5 c
REGRESSION = f"""{HEAD}
  <Header/>
  <DataDictionary numberOfFields="4">
    <DataField name="a" optype="continuous" dataType="double"/>
    <DataField name="b" optype="continuous" dataType="double"/>
    <DataField name="c" optype="continuous" dataType="double"/>
    <DataField name="y" optype="continuous" dataType="double"/>
  </DataDictionary>
  <RegressionModel functionName="regression">
    <MiningSchema>
      <MiningField name="a"/><MiningField name="b"/><MiningField name="c"/>
      <MiningField name="y" usageType="target"/>
    </MiningSchema>
    <RegressionTable intercept="4.0">
      <NumericPredictor name="a" coefficient="1.0"/>
      <NumericPredictor name="b" coefficient="-2.0"/>
      <NumericPredictor name="c" coefficient="0.5"/>
    </RegressionTable>
  </RegressionModel>
</PMML>
"""

# P(yes) = logistic(0.5 + 2 a - b)
LOGISTIC = f"""{HEAD}
  <DataDictionary numberOfFields="3">
    <DataField name="a" optype="continuous" dataType="double"/>
    <DataField name="b" optype="continuous" dataType="double"/>
    <DataField name="y" optype="categorical" dataType="string">
      <Value value="no"/><Value value="yes"/>
    </DataField>
  </DataDictionary>
  <RegressionModel functionName="classification" normalizationMethod="logit">
    <MiningSchema>
      <MiningField name="a"/><MiningField name="b"/><MiningField name="y" usageType="target"/>
    </MiningSchema>
    <RegressionTable intercept="0.5" targetCategory="yes">
      <NumericPredictor name="a" coefficient="2.0"/>
      <NumericPredictor name="b" coefficient="-1.0"/>
    </RegressionTable>
    <RegressionTable intercept="0" targetCategory="no"/>
  </RegressionModel>
</PMML>
"""

# y = 10 if u <= 0.3 else (20 if v < 0 else 30); 0.3 is not a float32 value
REGRESSION_TREE = f"""{HEAD}
  <DataDictionary numberOfFields="3">
    <DataField name="u" optype="continuous" dataType="double"/>
    <DataField name="v" optype="continuous" dataType="double"/>
    <DataField name="y" optype="continuous" dataType="double"/>
  </DataDictionary>
  <TreeModel functionName="regression" splitCharacteristic="binarySplit">
    <MiningSchema>
      <MiningField name="u"/><MiningField name="v"/><MiningField name="y" usageType="target"/>
    </MiningSchema>
    <Node id="0" score="0"><True/>
      <Node id="1" score="10"><SimplePredicate field="u" operator="lessOrEqual" value="0.3"/></Node>
      <Node id="2" score="0"><SimplePredicate field="u" operator="greaterThan" value="0.3"/>
        <Node id="3" score="20"><SimplePredicate field="v" operator="lessThan" value="0"/></Node>
        <Node id="4" score="30">
          <SimplePredicate field="v" operator="greaterOrEqual" value="0"/>
        </Node>
      </Node>
    </Node>
  </TreeModel>
</PMML>
"""


def _write(tmp_path: Path, text: str, name: str = "model.pmml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_tree_classifier(tmp_path: Path) -> None:
    # One row per leaf, and rows exactly on both thresholds (<= goes left).
    rows = np.array(
        [[0.2, 1.0], [0.2, 2.0], [0.9, 0.0], [0.5, 1.5], [0.5, 1.6], [0.51, -3.0]],
        dtype=np.float32,
    )
    a, b, c = [0.8, 0.2, 0.0], [0.25, 0.75, 0.0], [0.0, 0.1, 0.9]
    converted = convert_file(_write(tmp_path, TREE), rows)
    assert converted.classes == ["a", "b", "c"]
    assert converted.feature_names == ["x1", "x2"]
    assert converted.sample_labels == ["a", "b", "c", "a", "b", "c"]
    assert converted.source == "PMML PMMLTreeClassifier"
    runtime = OnnxModel(converted.onnx)
    assert [o.name for o in runtime.signature.outputs] == ["label", "probabilities"]
    out = runtime.predict(rows)
    assert out["label"].tolist() == ["a", "b", "c", "a", "b", "c"]
    np.testing.assert_allclose(out["probabilities"], [a, b, c, a, b, c], atol=1e-6)


def test_linear_regression(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    converted = convert_file(_write(tmp_path, REGRESSION, "linear.xml"), rows)
    assert converted.feature_names == ["a", "b", "c"]
    assert converted.classes is None
    runtime = OnnxModel(converted.onnx)
    assert [o.name for o in runtime.signature.outputs] == ["variable"]
    [out] = runtime.predict(rows).values()
    expected = 4 + rows[:, 0] - 2 * rows[:, 1] + 0.5 * rows[:, 2]
    np.testing.assert_allclose(out.reshape(-1), expected, atol=1e-5)


def test_logistic_regression(tmp_path: Path) -> None:
    rows = np.random.default_rng(1).normal(size=(30, 2)).astype(np.float32)
    converted = convert_file(_write(tmp_path, LOGISTIC), rows)
    assert converted.classes == ["no", "yes"]
    out = OnnxModel(converted.onnx).predict(rows)
    p_yes = 1 / (1 + np.exp(-(0.5 + 2 * rows[:, 0].astype(np.float64) - rows[:, 1])))
    np.testing.assert_allclose(out["probabilities"][:, 1], p_yes, atol=1e-5)
    assert out["label"].tolist() == np.where(p_yes > 0.5, "yes", "no").tolist()


def test_regression_tree_with_strict_and_inclusive_operators(tmp_path: Path) -> None:
    below = np.nextafter(np.float32(0.3), np.float32(0))
    # float32(0.3) is just above 0.3, so it goes right, as it does in double precision.
    rows = np.array(
        [[0.2, 5.0], [below, -1.0], [0.3, -1.0], [2.5, -0.1], [2.5, 0.0], [3.0, 0.1]],
        dtype=np.float32,
    )
    converted = convert_file(_write(tmp_path, REGRESSION_TREE), rows)
    [out] = OnnxModel(converted.onnx).predict(rows).values()
    np.testing.assert_allclose(out.reshape(-1), [10, 10, 20, 20, 30, 30], atol=1e-6)


def test_build_message_from_pmml_is_served(tmp_path: Path) -> None:
    path = _write(tmp_path, TREE)
    message = build_message(PublishRequest(path, "iris", "1"))
    meta = message.metadata
    assert meta["feature_names"] == ["x1", "x2"]
    assert meta["classes"] == ["a", "b", "c"]
    assert meta["converted_from"] == "PMML PMMLTreeClassifier"
    model = ModelRegistry().build(parse_model_message(b"iris", encode_model_message(message)))
    out = model.runtime.predict(np.array([[0.9, 0.0]], dtype=np.float32))
    assert out["label"].tolist() == ["c"]


def test_categorical_input_is_refused(tmp_path: Path) -> None:
    text = TREE.replace(
        '<DataField name="x2" optype="continuous" dataType="double"/>',
        '<DataField name="x2" optype="categorical" dataType="string">'
        '<Value value="u"/><Value value="v"/></DataField>',
    )
    with pytest.raises(ConversionError, match="field 'x2' is not continuous numeric"):
        convert_file(_write(tmp_path, text))


def test_unsupported_document(tmp_path: Path) -> None:
    text = REGRESSION.replace("RegressionModel", "BaselineModel")
    with pytest.raises(ConversionError, match=r"sklearn-pmml-model cannot read model\.pmml"):
        convert_file(_write(tmp_path, text))


def test_missing_pmml_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "sklearn_pmml_model"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "sklearn_pmml_model", None)
    with pytest.raises(MissingExtra, match=r"^install hotswap\[pmml\] to publish PMML models$"):
        convert_file(_write(tmp_path, TREE))
