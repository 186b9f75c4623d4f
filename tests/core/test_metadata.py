"""The model-file metadata is untrusted input: every malformed value is one ModelError line."""
from __future__ import annotations

import json

import pytest

from dino_core.errors import ModelError
from dino_core.metadata import BatchSpec, InputFormat, ModelMetadata

from .malformed_metadata import MALFORMED, mutated_props, valid_metadata


def test_a_valid_map_round_trips_through_props_and_json():
    meta = valid_metadata()
    assert ModelMetadata.from_props(meta.to_props()) == meta
    assert ModelMetadata.from_json(meta.to_json()) == meta
    assert meta.batch == BatchSpec(fixed=None, dynamic=(1, 4, 16))
    assert meta.input_format is InputFormat.FLOAT_NCHW


@pytest.mark.parametrize("case, key, raw, needle", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_each_malformed_value_is_one_line_naming_it(case, key, raw, needle):
    with pytest.raises(ModelError) as e:
        ModelMetadata.from_props(mutated_props(key, raw), "m.onnx")
    text = str(e.value)
    assert "\n" not in text and text.startswith("m.onnx: ") and len(text) < 400, text
    assert needle in text


@pytest.mark.parametrize("case, key, raw, needle", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_each_malformed_value_in_a_json_sidecar_is_one_line(case, key, raw, needle):
    values = {k[len("dino."):]: v for k, v in mutated_props(key, raw).items()}
    text = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in values.items()) + "}"
    with pytest.raises(ModelError) as e:
        ModelMetadata.from_json(text, "m.engine.json")
    assert "\n" not in str(e.value) and str(e.value).startswith("m.engine.json: ")


def test_int8_weight_bits_are_7_or_8_or_not_recorded():
    # 0: an int8 file written before weight_bits was recorded (its weights use 8 bits).
    int8 = valid_metadata().with_(precision="int8")
    for bits in (0, 7, 8):
        meta = int8.with_(weight_bits=bits)
        assert ModelMetadata.from_props(meta.to_props()).weight_bits == bits
    for raw in ("6", "true", "8.0"):
        with pytest.raises(ModelError, match="weight_bits .*: expected 0, 7 or 8 for an int8"):
            ModelMetadata.from_props(mutated_props("weight_bits", raw, int8), "m.onnx")


@pytest.mark.parametrize("text, needle", [
    ("[1, 2]", "expected a JSON object, got list"),
    ("null", "expected a JSON object, got NoneType"),
    ("", "not valid JSON"),
    ("[" * 100_000, "not valid JSON"),
    ("{" + '"a": {' * 50_000 + "}" * 50_001, "not valid JSON"),
])
def test_a_sidecar_that_is_not_a_json_object_is_one_line(text, needle):
    with pytest.raises(ModelError, match=needle) as e:
        ModelMetadata.from_json(text, "m.engine.json")
    assert "\n" not in str(e.value)
