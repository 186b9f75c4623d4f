"""Fuzzing model-file metadata: 200 random mutations of the tiny model's ``dino.*`` map and 200
of its ``.engine.json`` sidecar (values replaced by random JSON, numbers and shapes nudged,
keys deleted or swapped, text garbled or nested deep) must each end in a one-line ModelError or
a model that runs correctly: never another exception, a hang (each case is time-boxed) or a
crash. Maps that validate are run: an ``.onnx`` copy carrying them goes through ``Runtime``
and must give the same outputs as the original (or one ModelError line).

The seed is fixed; ``DINO_FUZZ_SEED=n`` explores others.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dino_core.errors import ModelError
from dino_core.metadata import PREFIX, ModelMetadata
from dino_runtime import Runtime
from dino_runtime.backends.trt_backend import read_sidecar
from dino_runtime.preprocess import InputSpec, Preprocessor
from tests.limits import judge

from .conftest import run_cli, synthetic_frame
from .test_model_files import with_props

SEED = int(os.environ.get("DINO_FUZZ_SEED", "22"))
CASES = 200
CASE_SECONDS = 10.0
BATCH_TEXTS = ["0", "-1", "1", "16", " 8", "８", "²", "1e3", "dynamic:1,2", "dynamic:3,2,1",
               "dynamic:1,1,4096", "dynamic:1,1,4097", "dynamic:1,4,16", "dynamic:x,y,z",
               "dynamic:" + "9" * 5000 + ",1,1", "", "dynamic:1,4,16,32"]
STRINGS = ["", "fp16", "fp32", "int8", "bf16", "dino", "dinov2", "images", "images_bgr",
           "uint8_nhwc_bgr", "float_nchw_rgb_normalized", "vit_small", "\u00e9\u4e2d\U0001f600",
           "x" * 200, "\x00", "B"]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(["int", "float", "str", "bool", "null", "list", "dict"] if depth < 3
                      else ["int", "float", "str", "bool", "null"])
    if kind == "int":
        return rng.choice([0, 1, -1, 2, 3, 16, 64, 192, 8192, 8193, 10 ** rng.randint(2, 40),
                           -10 ** rng.randint(2, 40)])
    if kind == "float":
        return rng.choice([0.0, -0.0, 0.5, 1e-300, 1e308, float("nan"), float("inf"),
                           -float("inf"), rng.uniform(-10, 10)])
    if kind == "str":
        return rng.choice(STRINGS + BATCH_TEXTS)
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "null":
        return None
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 3, 4]))]
    return {rng.choice(["cls", "attn", "patch", "x", "B", ""]): random_json(rng, depth + 1)
            for _ in range(rng.choice([0, 1, 2, 3]))}


def _nudge_numbers(rng: random.Random, value: Any) -> Any:
    """One number inside ``value`` changed (0, -1, +1, x10, huge, a float, a string)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return rng.choice([0, -1, value + 1, value * 10, 1 << 62, float(value), str(value)])
    if isinstance(value, list) and value:
        value = list(value)
        i = rng.randrange(len(value))
        value[i] = _nudge_numbers(rng, value[i])
        return value
    if isinstance(value, dict) and value:
        value = dict(value)
        key = rng.choice(list(value))
        value[key] = _nudge_numbers(rng, value[key])
        return value
    return value


def mutate(rng: random.Random, plain: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(what was done, raw map field -> JSON text): 1 to 3 mutations of a valid map."""
    values = dict(plain)
    raw: dict[str, str] = {}
    steps = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        key = rng.choice(list(values))
        op = rng.choice(["replace", "nudge", "nudge", "delete", "swap", "batch", "garble",
                         "deep", "outputs", "unknown-key"])
        if op == "replace":
            values[key] = random_json(rng)
        elif op == "nudge":
            values[key] = _nudge_numbers(rng, values[key])
        elif op == "delete":
            del values[key]
        elif op == "swap":
            other = rng.choice(list(values))
            values[key], values[other] = values[other], values[key]
            key = f"{key}<->{other}"
        elif op == "batch":
            key, values["batch"] = "batch", rng.choice(BATCH_TEXTS)
        elif op == "garble":
            text = json.dumps(values[key])
            cut = rng.randrange(len(text) + 1)
            raw[key] = text[:cut] + rng.choice(["", "\x00", "}", "[", "\ufffd", "NaN", ","]) \
                + text[cut + rng.choice([0, 1]):]
        elif op == "deep":
            raw[key] = "[" * rng.choice([50, 999, 5000, 100_000]) + "1" + "]" * 10
        elif op == "outputs":
            outputs = json.loads(json.dumps(values.get("outputs", {})))
            outputs = outputs if isinstance(outputs, dict) else {}
            name = rng.choice(["cls", "attn", "patch", "attn_registers", "x"])
            outputs[name] = rng.choice([random_json(rng), _nudge_numbers(rng, outputs.get(
                name, ["B", 1])), None])
            key, values["outputs"] = "outputs", outputs
        else:
            key = rng.choice(["extra", "dino", "", "outputs2"])
            values[key] = random_json(rng)
        steps.append(f"{op} {key}")
    text = {k: json.dumps(v) for k, v in values.items()}
    text.update({k: v for k, v in raw.items() if k in values})
    return "; ".join(steps), text


def file_with(tiny_onnx: Path, path: Path, text: dict[str, str], base: dict) -> Path:
    """A copy of the tiny model carrying exactly the map ``text`` (fields it lacks removed)."""
    return with_props(tiny_onnx, path, dict(text) | {k: None for k in base if k not in text})


@pytest.fixture(scope="module")
def base_plain(tiny_onnx) -> dict[str, Any]:
    return Runtime(tiny_onnx, warmup=False).metadata.to_plain()


@pytest.fixture(scope="module")
def reference(tiny_onnx):
    return [synthetic_frame(i) for i in range(3)], Runtime(tiny_onnx)


def test_200_mutated_metadata_maps_end_in_one_line_or_a_correct_run(tiny_onnx, tmp_path,
                                                                   base_plain, reference):
    rng = random.Random(SEED)
    frames, base_runtime = reference

    def expected(meta: ModelMetadata, frames: list):
        """The original graph fed as ``meta`` says (the original file carries no mistake)."""
        pre = Preprocessor(InputSpec.from_metadata(meta))
        return base_runtime.backend.run(np.stack([pre(f) for f in frames]))

    failures, outcomes = [], {"refused": 0, "ran": 0, "refused-at-open": 0}
    for i in range(CASES):
        what, text = mutate(rng, base_plain)
        props = {PREFIX + k: v for k, v in text.items()}
        outcome, meta, problem = judge(lambda: ModelMetadata.from_props(props, "m.onnx"),
                                       ModelError, CASE_SECONDS, f"case {i}")
        if outcome == "ok":
            # a map that validates: the file carrying it must compute what the map says (its
            # own mean/std, which may differ from the original's), or be refused in one line
            want = expected(meta, frames)
            path = file_with(tiny_onnx, tmp_path / f"case{i}.onnx", text, base_plain)
            outcome, got, problem = judge(lambda: Runtime(path)(frames), ModelError,
                                          CASE_SECONDS, f"case {i}")
            path.unlink()
            if outcome == "ok":
                same = np.allclose(got.cls, want.cls, atol=1e-5) and \
                    np.allclose(got.attn, want.attn, atol=1e-6)
                outcome, problem = "ran", None if same else "outputs differ from the map's"
            else:
                outcome = "refused-at-open" if outcome == "refused" else outcome
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if problem:
            failures.append(f"case {i} ({what}): {problem}")
    assert not failures, f"seed {SEED}, {outcomes}:\n" + "\n".join(failures)
    assert outcomes["refused"] > 100 and outcomes["ran"] > 10, outcomes


def test_200_mutated_engine_sidecars_end_in_one_line_or_valid_metadata(tmp_path, base_plain):
    """read_sidecar needs no TensorRT; some cases also garble the file's bytes."""
    rng = random.Random(SEED + 1)
    engine = tmp_path / "m.fp16.engine"
    sidecar = Path(f"{engine}.json")
    failures, outcomes = [], {"refused": 0, "ok": 0}
    for i in range(CASES):
        what, text = mutate(rng, base_plain)
        data = ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in text.items()) + "}"
                ).encode("utf-8", "surrogatepass")
        if rng.random() < 0.25:
            data = bytearray(data)
            for _ in range(rng.choice([1, 4, 16])):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data, what = bytes(data), what + "; bytes garbled"
        if rng.random() < 0.05:
            data, what = rng.choice([b"[]", b"null", b"", b"\xff" * 10, b"[" * 200_000,
                                     b" " * (2 << 20)]), "replaced whole file"
        sidecar.write_bytes(data)
        outcome, _, problem = judge(lambda: read_sidecar(engine), ModelError, CASE_SECONDS,
                                    f"case {i}")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if problem:
            failures.append(f"case {i} ({what}): {problem}")
    assert not failures, f"seed {SEED + 1}, {outcomes}:\n" + "\n".join(failures)
    assert outcomes["refused"] > 100 and outcomes["ok"] > 5, outcomes


@pytest.mark.parametrize("case", [0, 1, 2])
def test_mutated_models_through_dino_run_are_one_line(tiny_onnx, tmp_path, base_plain, video_60,
                                                     case):
    """The first three mutations of the map, as files given to the real command."""
    rng = random.Random(SEED)
    for _ in range(case + 1):
        what, text = mutate(rng, base_plain)
    path = file_with(tiny_onnx, tmp_path / "m.onnx", text, base_plain)
    code, _, err = run_cli("--model", path, "--source", video_60, "--max-frames", "4",
                           "--no-display")
    assert code in (0, 1) and "Traceback" not in err, f"{what}: exit {code}: {err}"
    if code:
        assert err.strip().splitlines()[-1].startswith("dino-run: "), f"{what}: {err}"
