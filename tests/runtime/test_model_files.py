"""Model files are untrusted input: malformed metadata in an ``.onnx`` file or an
``.engine.json`` sidecar, a graph that disagrees with its metadata, sizes that would exhaust
memory, and broken weights each end in one ModelError line, never a traceback, a crash, a
28 GiB warm-up or a run that exits 0 with NaN output."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from dino_core import memory
from dino_core.errors import ModelError
from dino_runtime import Runtime
from dino_runtime.backends.trt_backend import read_sidecar
from tests.core.malformed_metadata import MALFORMED, valid_metadata

from .conftest import assert_one_line_error, run_cli


def with_props(model: Path, out: Path, changes: dict[str, str | None]) -> Path:
    """A copy of ``model`` with some ``dino.*`` metadata entries replaced (None: removed)."""
    proto = onnx.load(str(model))
    props = {p.key: p.value for p in proto.metadata_props}
    for key, raw in changes.items():
        if raw is None:
            props.pop("dino." + key, None)
        else:
            props["dino." + key] = raw
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(out))
    return out


def one_line_model_error(make, *needles: str) -> str:
    with pytest.raises(ModelError) as e:
        make()
    text = str(e.value)
    assert "\n" not in text and len(text) < 400, text
    for needle in needles:
        assert needle in text, text
    return text


def test_the_tiny_model_carries_the_metadata_the_malformed_cases_start_from(tiny_onnx):
    assert Runtime(tiny_onnx).metadata == valid_metadata().with_(
        checkpoint_sha256=Runtime(tiny_onnx).metadata.checkpoint_sha256,
        toolkit_version=Runtime(tiny_onnx).metadata.toolkit_version)


@pytest.mark.parametrize("case, key, raw, needle", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_onnx_metadata_is_one_line(tiny_onnx, tmp_path, case, key, raw, needle):
    path = with_props(tiny_onnx, tmp_path / "m.onnx", {key: raw})
    one_line_model_error(lambda: Runtime(path), str(path), needle)


@pytest.mark.parametrize("case, key, raw, needle", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_engine_sidecar_is_one_line(tmp_path, case, key, raw, needle):
    """read_sidecar is the TensorRT backend's reader; it needs no TensorRT."""
    engine = tmp_path / "m.fp16.engine"
    values = {k[len("dino."):]: v for k, v in valid_metadata().to_props().items()}
    if raw is None:
        del values[key]
    else:
        values[key] = raw
    Path(f"{engine}.json").write_text(
        "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in values.items()) + "}")
    one_line_model_error(lambda: read_sidecar(engine), "m.fp16.engine.json")


@pytest.mark.parametrize("content, needle", [
    (b"[1, 2, 3]", "expected a JSON object, got list"),
    (b"[" * 200_000 + b"]" * 200_000, "not valid JSON"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not UTF-8 JSON text"),
    (b"", "not valid JSON"),
    (b" " * ((1 << 20) + 1), "larger than 1048576 bytes"),
])
def test_a_broken_sidecar_file_is_one_line(tmp_path, content, needle):
    engine = tmp_path / "m.engine"
    Path(f"{engine}.json").write_bytes(content)
    one_line_model_error(lambda: read_sidecar(engine), "m.engine.json", needle)


def test_a_sidecar_that_is_a_folder_is_one_line(tmp_path):
    engine = tmp_path / "m.engine"
    Path(f"{engine}.json").mkdir()
    one_line_model_error(lambda: read_sidecar(engine), "not found beside the engine")


def _rename_graph_input(proto: onnx.ModelProto, old: str, new: str) -> None:
    for value in proto.graph.input:
        if value.name == old:
            value.name = new
    for node in proto.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


# both CPU engines that read .onnx files check the graph against its metadata
GRAPH_BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="the openvino extra is not installed"))]


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_uint8_graph_input_under_float_metadata_is_refused(tiny_onnx_bgr, tmp_path, backend):
    """The graph takes uint8 (B, H, W, 3) but the metadata says float (B, 3, H, W): the first
    batch was a traceback from ONNX Runtime."""
    proto = onnx.load(str(tiny_onnx_bgr))
    _rename_graph_input(proto, "images_bgr", "images")
    path = tmp_path / "mixed.onnx"
    onnx.save(proto, str(path))
    path = with_props(path, path, {"input_format": '"float_nchw_rgb_normalized"',
                                   "input_name": '"images"'})
    one_line_model_error(lambda: Runtime(path, backend=backend), "graph input images is uint8",
                         "the metadata says float32")


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_graph_input_shape_disagreeing_with_the_metadata_is_refused(tiny_onnx, tmp_path, backend):
    """Metadata edited to 128x192 (consistently) on a graph built for 64x96."""
    meta = valid_metadata()
    big = meta.with_(img_size=(128, 192),
                     outputs={"cls": ["B", 192], "attn": ["B", 3, 8, 12], "patch": ["B", 96, 192]})
    changes = {k[len("dino."):]: v for k, v in big.to_props().items()
               if k in ("dino.img_size", "dino.outputs")}
    path = with_props(tiny_onnx, tmp_path / "m.onnx", changes)
    one_line_model_error(lambda: Runtime(path, backend=backend), "graph input images is float32 with shape ['B', 3, 64, 96]",
                         "the metadata says float32 ['B', 3, 128, 192]")


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_graph_output_shape_disagreeing_with_the_metadata_is_refused(tiny_onnx, tmp_path, backend):
    """num_heads 6 with an attn shape to match, on a 3-head graph: masks of the wrong heads."""
    path = with_props(tiny_onnx, tmp_path / "m.onnx", {
        "num_heads": "6",
        "outputs": '{"cls": ["B", 192], "attn": ["B", 6, 4, 6], "patch": ["B", 24, 192]}'})
    one_line_model_error(lambda: Runtime(path, backend=backend), "graph output attn is float32 with shape ['B', 3, 4, 6]",
                         "the metadata says float32 ['B', 6, 4, 6]")


def test_a_dynamic_batch_claimed_for_a_fixed_batch_graph_is_refused(tmp_path, tiny_checkpoint):
    from dino_export import ExportConfig, export_onnx
    fixed = export_onnx(tiny_checkpoint, tmp_path / "b2.onnx",
                        ExportConfig(img_size=(64, 96), batch=2))
    path = with_props(fixed, tmp_path / "m.onnx", {"batch": '"dynamic:1,4,16"'})
    one_line_model_error(lambda: Runtime(path), "graph input images is float32 with shape [2, 3, 64, 96]",
                         "['B', 3, 64, 96] with B dynamic 1..16")


def test_memory_estimate_refuses_a_batch_the_machine_cannot_hold(tiny_onnx, monkeypatch):
    need_one = memory.inference_bytes(valid_metadata(), 1)
    monkeypatch.setattr(memory, "available_bytes", lambda: 3 * need_one)
    text = one_line_model_error(lambda: Runtime(tiny_onnx, batch_size=16),
                                "one batch of 16 frames at 64x96 needs about",
                                "available; run with --batch 3 or less")
    assert "attention scores (16, 3, 25, 25)" in text
    assert Runtime(tiny_onnx, batch_size=3).batch_size == 3   # what the message says fits
    # verification's batch is only a speed choice: it lowers it to what fits instead
    assert Runtime(tiny_onnx, batch_size=16, fit_batch=True).batch_size == 3


def test_memory_estimate_refuses_large_but_legal_sizes_before_allocating():
    """8192x8192 at patch 8 passes every range check; its attention scores alone are
    (1, 6, 1048577, 1048577) float32, about 24 TiB: refused before warm-up allocates."""
    meta = valid_metadata().with_(
        patch_size=8, embed_dim=384, num_heads=6, img_size=(8192, 8192),
        outputs={"cls": ["B", 384], "attn": ["B", 6, 1024, 1024]}).validate()
    one_line_model_error(lambda: memory.check_inference_memory(meta, 1, "m.onnx"),
                         "m.onnx: one batch of 1 frame at 8192x8192 needs about",
                         "attention scores (1, 6, 1048577, 1048577)",
                         "export it at a smaller --img-size")


@pytest.mark.parametrize("args, needle", [
    (["--source", "{video}"], "img_size 100000: expected an integer in 16..8192"),
])
def test_malformed_metadata_through_dino_run_is_one_line(tiny_onnx, video_60, tmp_path, args,
                                                         needle):
    path = with_props(tiny_onnx, tmp_path / "m.onnx", {"img_size": "[100000, 100000]"})
    args = [a.format(video=video_60) for a in args]
    code, _, err = run_cli("--model", path, *args, "--no-display")
    assert_one_line_error(code, err, needle)


@pytest.fixture(scope="module")
def nan_onnx(tiny_onnx, tmp_path_factory) -> Path:
    """The tiny model with one NaN in its largest weight (what a diverged run leaves)."""
    proto = onnx.load(str(tiny_onnx))
    init = max(proto.graph.initializer, key=lambda i: onnx.numpy_helper.to_array(i).size)
    array = onnx.numpy_helper.to_array(init).copy()
    array.flat[0] = np.nan
    init.CopyFrom(onnx.numpy_helper.from_array(array, init.name))
    path = tmp_path_factory.mktemp("nan") / "nan.onnx"
    onnx.save(proto, str(path))
    return path


def test_nan_weights_stop_dino_run_with_one_line(nan_onnx, tmp_path, video_60):
    """A NaN weight made every embedding NaN and every mask empty, and dino-run exited 0."""
    emb = tmp_path / "cls.npy"
    code, _, err = run_cli("--model", nan_onnx, "--source", video_60, "--embeddings", emb,
                           "--masks-dir", tmp_path / "masks", "--no-display")
    # no warm-up call: the first batch finds it, after the aspect warning (the clip's aspect
    # differs from the model's) and the banner
    warning, banner, *rest = err.splitlines()
    assert banner.startswith("dino-run: dino vit_tiny/16 64x96 on "), err
    assert warning.startswith("dino-run: warning: frames 160x96 are stretched"), err
    err = "\n".join(rest)
    assert_one_line_error(code, err, "non-finite (NaN or inf) values in the model's cls output")
    assert not emb.exists() and not (tmp_path / "masks").exists()


def test_nan_output_on_the_first_batch_stops_the_python_pipeline(nan_onnx, video_60):
    rt = Runtime(nan_onnx, warmup=False)  # the warm-up check is skipped: the first batch's runs
    with pytest.raises(ModelError, match="non-finite .* cls output on the first batch") as e:
        list(rt.stream(video_60))
    assert "\n" not in str(e.value) and rt.last_summary.frames == 0


def test_nan_weights_in_a_checkpoint_stop_the_torch_backend(tmp_path):
    import torch

    from tests.conftest import tiny_vit
    state = tiny_vit().state_dict()
    state["norm.weight"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    one_line_model_error(lambda: Runtime(tmp_path / "nan.pth", precision="fp32",
                                         input_size=(64, 96)),
                         "non-finite (NaN or inf) values in the model's cls output on a blank "
                         "warm-up frame")
