"""float32 ONNX -> int8 QDQ, calibrated on the user's images, for CPUs or for TensorRT.

ONNX Runtime static quantization in QDQ format: per-channel symmetric int8 weights for the
patch-embedding Conv and the weight MatMuls (qkv, proj, fc1, fc2). LayerNorm, Softmax, GELU and
the residual Adds are not in the quantized op types, so they stay float; the attention products
(q @ k, probs @ v) have no weights and stay float too, because their activations have outliers
that one 8-bit scale cannot hold. Two schemes (:class:`QuantScheme`):

* ``CPU`` (``--precision int8``): uint8 activations with a zero point (the u8s8 form that x86
  VNNI multiplies directly) and int32 biases.
* ``TENSORRT`` (the graph ``--trt int8`` builds from): int8 activations with zero point 0 and
  float biases. TensorRT quantizes symmetrically only ("zeroPt must be all zeros", signed INT8;
  NVIDIA, "Working with Quantized Types"), so it cannot build from the CPU file.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from dino_core.batching import chunks, stack_padded
from dino_core.errors import OptionError
from dino_core.metadata import InputFormat
from dino_runtime.preprocess import InputSpec, Preprocessor

from .images import folder_images

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


@dataclass(frozen=True)
class QuantScheme:
    """How activations and biases are quantized (weights: per-channel symmetric int8 always)."""

    name: str
    activation_type: str        # onnxruntime.quantization.QuantType member: QUInt8 | QInt8
    activation_symmetric: bool  # zero point 0
    quantize_bias: bool         # int32 bias through a DequantizeLinear, else a float bias


@dataclass(frozen=True)
class Calibration:
    """What calibration reads: up to ``count`` images of ``folder`` at ``img_size`` (H, W), fed
    as the graph takes them (uint8 BGR frames when ``preprocess`` is baked in, else normalised
    float NCHW) in batches of ``batch``. Its own type, not the export config, so that this module
    needs nothing from :mod:`dino_export.config` (whose validation reads the targets table, which
    calls this module: issue 31's import circle)."""

    folder: Path | None
    count: int
    img_size: tuple[int, int]
    preprocess: bool
    batch: int


CPU = QuantScheme("cpu", "QUInt8", activation_symmetric=False, quantize_bias=True)
TENSORRT = QuantScheme("tensorrt", "QInt8", activation_symmetric=True, quantize_bias=False)


class _Reader:
    """ORT CalibrationDataReader over preprocessed images, one image per call."""

    def __init__(self, input_name: str, feeds: list[np.ndarray]) -> None:
        self._items = iter([{input_name: f} for f in feeds])

    def get_next(self):
        return next(self._items, None)


def calibration_feeds(calib: Calibration) -> list[np.ndarray]:
    """Images from ``calib.folder`` in the graph's input format, in chunks of ``calib.batch``."""
    if calib.folder is None:
        raise OptionError("int8 needs calibration images: pass --calib-data DIR")
    feeds = folder_images(calib.folder, calib.count, calib.img_size)  # uint8 BGR
    if not calib.preprocess:  # the float input the runtime computes from these frames
        to_float = Preprocessor(InputSpec(calib.img_size, InputFormat.FLOAT_NCHW))
        feeds = np.stack([to_float(frame) for frame in feeds])
    # A fixed-batch graph needs full batches: repeat images to fill the last one.
    return [stack_padded(list(feeds[part]), calib.batch)
            for part in chunks(len(feeds), calib.batch)]


def activation_matmuls(proto: onnx.ModelProto) -> list[str]:
    """MatMul nodes with no initializer operand (activation x activation) -> to exclude."""
    inits = {i.name for i in proto.graph.initializer}
    consts = {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in proto.graph.node if n.op_type == "MatMul"
            and not any(i in inits or i in consts for i in n.input)]


def unshare_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Give each quantizable consumer of a shared initializer its own copy.

    The exporter stores equal tensors once (e.g. the all-zero biases of a fresh model are one
    initializer used by Gemms and LayerNorms); quantizing a Gemm's bias in place would then feed
    the LayerNorms a dequantized tensor too.
    """
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    inits = {i.name: i for i in proto.graph.initializer}
    users: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    for node in proto.graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        for k, name in enumerate(node.input):
            if name in inits and users[name] > 1:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__{node.name}"
                proto.graph.initializer.append(copy)
                node.input[k] = copy.name
    return proto


def quantize_int8(proto: onnx.ModelProto, calib: Calibration, scheme: QuantScheme = CPU
                  ) -> onnx.ModelProto:
    """Static QDQ int8 of ``proto`` (float32) calibrated on ``calib``'s images."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    feeds = calibration_feeds(calib)
    input_name = proto.graph.input[0].name
    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        src, pre, dst = (Path(tmp) / n for n in ("f32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(proto, src)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        # After pre-processing, which fuses MatMul + bias Add into Gemm.
        pre_proto = unshare_initializers(onnx.load(pre))
        onnx.save(pre_proto, pre)
        quantize_static(
            str(pre), str(dst), _Reader(input_name, feeds), quant_format=QuantFormat.QDQ,
            activation_type=getattr(QuantType, scheme.activation_type),
            weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=QUANTIZED_OPS,
            nodes_to_exclude=activation_matmuls(pre_proto),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True,
                           "ActivationSymmetric": scheme.activation_symmetric,
                           "QuantizeBias": scheme.quantize_bias})
        return onnx.load(dst)
