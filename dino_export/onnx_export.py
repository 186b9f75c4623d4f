"""Checkpoint -> verified-ready ONNX file: :func:`export_onnx`.

    export_onnx(checkpoint_or_model, out_path, config=None) -> Path

``checkpoint_or_model`` is anything :func:`dino_models.checkpoint.load_backbone` accepts (a path
or hub name) or an in-memory backbone (:class:`dino_models.backbone.Backbone`: a ViT of any
family or a DINOv3 ConvNeXt). The file holds one graph with input ``images`` float32
(B, 3, H, W) (or ``images_bgr`` uint8 (B, H, W, 3) with ``config.preprocess``) and outputs
``cls`` (B, D), ``attn`` (B, heads, H/p, W/p) and/or ``patch`` (B, H/p * W/p, D) and
(registers, storage tokens) ``attn_registers`` (B, heads, R); a backbone without attention has
``cls`` and ``patch`` only. In ``config.precision`` (fp16 and int8 keep float32 inputs and
outputs), with a :class:`dino_core.metadata.ModelMetadata` in ``metadata_props``. The file
is written to a temporary name and renamed, so ``out_path`` is never half-written.

The graph comes from ``torch.onnx.export(dynamo=True)``: on torch 2.14 it gives a clean op list
(one LayerNormalization per norm, no shape-arithmetic chains, no Identity/Constant clutter) that
matches PyTorch to ~2e-6, while the TorchScript exporter leaves ~70 Constant and ~14 Identity
nodes and Where/Equal guards.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from dino_core.errors import UserError
from dino_core.fileio import atomic_write_bytes
from dino_core.metadata import InputFormat, ModelMetadata
from dino_core.signals import GracefulStop, Interrupted
from dino_models import backbone as bb
from dino_models.checkpoint import load_backbone

from .config import ExportConfig, check_img_size, resolve_outputs
from .graph import ExportGraph
from .graph_checks import static_graph_problems
from .quantize import weight_bits
from .rewrite import squeeze_to_reshape, strip_node_metadata
from .targets import Target, target_for


@dataclass(frozen=True)
class WeightsSource:
    """Where the exported weights came from (for metadata and messages)."""

    name: str
    arch: str
    sha256: str


def toolkit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("dino-edge")
    except PackageNotFoundError:
        from . import __version__
        return __version__


def load_model(checkpoint_or_model, checkpoint_key: str = "teacher"
               ) -> tuple[bb.Backbone, WeightsSource]:
    """A path/hub name (through ``load_backbone``) or a model -> (model in eval mode, source)."""
    if isinstance(checkpoint_or_model, torch.nn.Module):
        model = checkpoint_or_model.eval()
        return model, WeightsSource("<in-memory model>", bb.arch_name(model), "")
    model, info = load_backbone(checkpoint_or_model, checkpoint_key=checkpoint_key)
    return model, WeightsSource(str(checkpoint_or_model), info.arch, info.sha256)


def output_shapes(model: bb.Backbone, config: ExportConfig) -> dict[str, list]:
    """Output name -> shape with ``"B"`` for the batch (its size is in ``ModelMetadata.batch``)."""
    b, heads = "B", bb.num_heads(model)
    gh, gw = config.img_size[0] // model.patch_size, config.img_size[1] // model.patch_size
    shapes = {"cls": [b, model.embed_dim], "attn": [b, heads, gh, gw],
              "patch": [b, gh * gw, model.embed_dim],
              "attn_registers": [b, heads, model.num_registers]}
    return {name: shapes[name] for name in resolve_outputs(config, model).outputs}


def build_metadata(model: bb.Backbone, source: WeightsSource, config: ExportConfig,
                   weight_bits: int = 0) -> ModelMetadata:
    """``weight_bits``: an int8 graph's, as :func:`~dino_export.quantize.weight_bits` reads it."""
    fmt = InputFormat.UINT8_NHWC if config.preprocess else InputFormat.FLOAT_NCHW
    return ModelMetadata(
        arch=source.arch, patch_size=model.patch_size, embed_dim=model.embed_dim,
        num_heads=bb.num_heads(model), depth=bb.depth(model), img_size=tuple(config.img_size),
        input_name=fmt.input_name, input_format=fmt, outputs=output_shapes(model, config),
        precision=config.precision, batch=config.batch_spec, family=model.family,
        num_registers=model.num_registers, has_attention=model.has_attention,
        checkpoint_sha256=source.sha256, toolkit_version=toolkit_version(),
        weight_bits=weight_bits).validate()


def trace(graph: ExportGraph, config: ExportConfig) -> onnx.ModelProto:
    """Run the dynamo exporter on ``graph``; float32 throughout."""
    example = graph.example_input(config.example_batch, config.img_size, config.seed)
    input_name = (InputFormat.UINT8_NHWC if config.preprocess else InputFormat.FLOAT_NCHW).input_name
    dynamic = None
    if config.dynamic_batch is not None:
        lo, _, hi = config.dynamic_batch
        # min=1 would be specialised away by torch.export's 0/1 rule; 1 still runs (checked
        # by the dynamic-batch test), the declared bound only guides the exporter.
        dynamic = ({0: torch.export.Dim("batch", min=max(lo, 2) if hi > 1 else 1, max=hi)},)
    # A stopping signal waits until the exporter returns: raised inside it (during one of its
    # lazy imports of torch._dynamo) it became an AttributeError and a TorchExportError, or was
    # lost. A second signal still stops at once.
    with GracefulStop() as stop, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # exporter chatter; the result is checked below
        program = torch.onnx.export(
            graph, (example,), dynamo=True, opset_version=config.opset,
            input_names=[input_name], output_names=list(config.outputs),
            dynamic_shapes=dynamic, external_data=False, verbose=False)
    if stop.requested:
        raise Interrupted(stop.signum)
    return program.model_proto


def attach_metadata(proto: onnx.ModelProto, meta: ModelMetadata) -> None:
    """Write ``meta`` into ``metadata_props`` (replacing earlier ``dino.*`` entries)."""
    keep = [p for p in proto.metadata_props if not p.key.startswith("dino.")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in meta.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "dino-edge"
    proto.producer_version = meta.toolkit_version
    family = {"dinov2": "DINOv2", "dinov3": "DINOv3"}.get(meta.family, "DINO")
    registers = f" with {meta.num_registers} registers" if meta.num_registers else ""
    proto.doc_string = (f"{family} {meta.arch}/{meta.patch_size}{registers} at {meta.img_size[0]}x"
                        f"{meta.img_size[1]}, outputs {', '.join(meta.outputs)}")


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """The :class:`ModelMetadata` stored in an exported file (validated)."""
    proto = onnx.load(str(path), load_external_data=False)
    return ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props}, str(path))


def run_onnx(proto_or_path, feed: np.ndarray, threads: int = 0) -> list[np.ndarray]:
    """One CPU run of an ONNX model (proto or path) on ``feed``; outputs in graph order."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    model = proto_or_path.SerializeToString() if isinstance(proto_or_path, onnx.ModelProto) \
        else str(proto_or_path)
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: feed})


def simplify(proto: onnx.ModelProto, example: np.ndarray, atol: float = 1e-5) -> onnx.ModelProto:
    """onnxslim's version when it removes nodes and its outputs equal the original's."""
    import onnxslim
    with contextlib.redirect_stdout(io.StringIO()):
        slim = onnxslim.slim(onnx.ModelProto.FromString(proto.SerializeToString()))
    if slim is None or len(slim.graph.node) >= len(proto.graph.node):
        return proto
    before, after = run_onnx(proto, example), run_onnx(slim, example)
    same = all(a.shape == b.shape and np.abs(a - b).max() <= atol for a, b in zip(before, after))
    return slim if same else proto


def checked_rewrite(before: onnx.ModelProto, after: onnx.ModelProto, example: np.ndarray,
                    atol: float = 0.0) -> onnx.ModelProto:
    """``after`` when its outputs equal ``before``'s on ``example``, else ``before``."""
    a, b = run_onnx(before, example), run_onnx(after, example)
    same = all(x.shape == y.shape and np.abs(x - y).max() <= atol for x, y in zip(a, b))
    return after if same else before


def write_atomic(proto: onnx.ModelProto, out_path: Path) -> Path:
    """Save to a temporary file beside ``out_path``, then rename over it."""
    # onnx.save wants a named file; the bytes go through the atomic writer instead
    return atomic_write_bytes(proto.SerializeToString(), out_path)


# One ONNX file is one protobuf message, which cannot exceed 2 GiB; larger models would need
# their weights in external data files, which this exporter does not write.
MAX_GRAPH_BYTES = 2 << 30


def check_single_file(model: bb.Backbone) -> None:
    """:class:`UserError` (one line) for a model whose float32 weights alone exceed one ONNX
    file (DINOv3 ViT-H+/16: 3.4 GB; ViT-7B/16: 27 GB), before any work."""
    weights = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    if weights > MAX_GRAPH_BYTES * 0.95:
        raise UserError(f"{weights / 1e9:.1f} GB of float32 weights do not fit in one ONNX file "
                        f"(protobuf's 2 GiB limit), and external weight files are not written "
                        f"yet: DINOv3 ViTs up to L/16 and L+/16 (1.2 GB) and the ConvNeXts export")


def export_fp32(model: bb.Backbone, config: ExportConfig) -> tuple[onnx.ModelProto, ExportGraph]:
    """The float32 graph, simplified when that helps, checked by ``onnx.checker``."""
    check_single_file(model)
    config = resolve_outputs(config, model)
    graph = ExportGraph(model, config)
    proto = trace(graph, config)
    example = graph.example_input(config.example_batch, config.img_size, config.seed + 1).numpy()
    if config.simplify:
        proto = simplify(proto, example)
    proto = strip_node_metadata(proto)
    proto = checked_rewrite(proto, squeeze_to_reshape(proto), example)
    onnx.checker.check_model(proto, full_check=True)
    check_static(proto)
    return proto, graph


def check_static(proto: onnx.ModelProto) -> None:
    """``RuntimeError`` when the graph is not one TensorRT parses as is (control flow, computed
    positions or shapes: :mod:`.graph_checks`). Never the case for a graph this exporter
    writes; a failure here is a bug in the toolkit, not in the checkpoint."""
    problems = static_graph_problems(proto)
    if problems:
        raise RuntimeError(f"the exported graph is not static ({'; '.join(problems[:3])}); "
                           "TensorRT could not parse it: please report this")


def export_onnx(checkpoint_or_model, out_path: str | os.PathLike,
                config: ExportConfig | None = None) -> Path:
    """Export to ``out_path`` (see the module docstring); returns the path written.

    Raises :class:`~dino_core.errors.UserError` (one line) for a bad checkpoint, an input size
    that is not a multiple of the patch size, or int8 without calibration images.
    """
    config = config or ExportConfig()
    model, source = load_model(checkpoint_or_model, config.checkpoint_key)
    check_img_size(config.img_size, model.patch_size)
    config = resolve_outputs(config, model, source.arch)
    proto, _ = export_fp32(model, config)
    return write_atomic(finish(proto, model, source, config), Path(out_path))


def finish(proto: onnx.ModelProto, model: bb.Backbone, source: WeightsSource,
           config: ExportConfig, target: Target | None = None) -> onnx.ModelProto:
    """Precision conversion, full checker pass, metadata: the file's final form. ``target`` is
    the graph row (default: the ``--precision`` row of ``config.precision``); ``proto`` is left
    as it was, so one float32 export can be finished into several graphs."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    proto = convert_precision(proto, config, target)
    if config.precision != "fp32":
        onnx.checker.check_model(proto, full_check=True)
        check_static(proto)
    bits = weight_bits(proto) if config.precision == "int8" else 0  # what the file holds
    attach_metadata(proto, build_metadata(model, source, config, bits))
    return proto


def convert_precision(proto: onnx.ModelProto, config: ExportConfig,
                      target: Target | None = None) -> onnx.ModelProto:
    """The float32 graph in ``config.precision``, by the target table's converter."""
    target = target or target_for("onnx", config.precision)
    return target.make(proto, config) if target.make is not None else proto
