"""float32 ONNX -> int8 QDQ, calibrated on the user's images, for CPUs or for TensorRT.

ONNX Runtime static quantization in QDQ format: per-channel symmetric int8 weights for the
patch-embedding Conv and the weight MatMuls (qkv, proj, fc1, fc2). LayerNorm, Softmax, GELU and
the residual Adds are not in the quantized op types, so they stay float; the attention products
(q @ k, probs @ v) have no weights and stay float too, because their activations have outliers
that one 8-bit scale cannot hold. A Conv whose output goes straight into a LayerNorm (DINOv3's
patch embedding, which has no position embedding added before its first norm; a ConvNeXt's
convolutions) stays float as well: its int8 output, one scale for the whole tensor, loses the
small differences between the channels of flat image regions, which the norm then scales up
(DINOv3 ViT-S+/16 on photos: patch-token cosine 0.85-0.96 with it quantized, 0.995 without). Two schemes (:class:`QuantScheme`):

* ``CPU`` (``--precision int8``): uint8 activations with a zero point (the u8s8 form that x86
  multiplies directly) and int32 biases, with 7-bit weights (integers in -64..64, ONNX
  Runtime's ``reduce_range``). x86 CPUs without VNNI (AVX2, and AVX-512 without VNNI) multiply
  u8 x s8 with ``vpmaddubsw``, which adds each pair of products into an int16 and saturates:
  2 * 255 * 127 = 64770 does not fit in 32767, 2 * 255 * 64 = 32640 does. VNNI
  (``vpdpbusd``) sums into int32 and never saturates, but where a file will run is unknown at
  export, so the CPU file always takes the 7 bits. Measured on an AVX2 CPU
  (docs/benchmarks/cpu-without-vnni.md; ViT-Tiny/16 and ViT-S/16, Imagenette photos): 8-bit
  weights drop the minimum CLS cosine to 0.81-0.92 in ONNX Runtime and OpenVINO, 7-bit ones
  keep it at 0.996-0.998, within 0.002 of what 8-bit weights give without saturation.
* ``TENSORRT`` (the graph ``--trt int8`` builds from): int8 activations with zero point 0 and
  float biases, 8-bit weights. TensorRT quantizes symmetrically only ("zeroPt must be all
  zeros", signed INT8; NVIDIA, "Working with Quantized Types"), so it cannot build from the CPU
  file; GPUs accumulate int8 products in int32, so its weights keep the full 8 bits.

The bits a file's weights use are read back from the file (:func:`weight_bits`) into its
metadata (``dino.weight_bits``).
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
from onnx import numpy_helper

from dino_core.batching import chunks, stack_padded
from dino_core.errors import OptionError
from dino_core.metadata import InputFormat
from dino_runtime.preprocess import InputSpec, Preprocessor

from .images import folder_images

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


@dataclass(frozen=True)
class QuantScheme:
    """How activations, biases and weights are quantized (weights: per-channel symmetric int8
    always, in ``weight_bits`` bits)."""

    name: str
    activation_type: str        # onnxruntime.quantization.QuantType member: QUInt8 | QInt8
    activation_symmetric: bool  # zero point 0
    quantize_bias: bool         # int32 bias through a DequantizeLinear, else a float bias
    weight_bits: int = 8        # 7: integers in -64..64 (no int16 saturation without VNNI)


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


CPU = QuantScheme("cpu", "QUInt8", activation_symmetric=False, quantize_bias=True,
                  weight_bits=7)
TENSORRT = QuantScheme("tensorrt", "QInt8", activation_symmetric=True, quantize_bias=False,
                       weight_bits=8)
# The largest weight integer of 7-bit weights (ONNX Runtime's reduced int8 range, -64..64): a
# pair of u8 x s8 products then fits an int16, 2 * 255 * 64 = 32640 <= 32767.
REDUCED_WEIGHT_MAX = 64


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


# Ops that move or regroup values without computing new ones.
DATA_MOVEMENT = ("Reshape", "Transpose", "Concat", "Flatten", "Squeeze", "Unsqueeze", "Slice")


# The first op of a normalisation: ONNX's LayerNormalization, or the ReduceMean that begins one
# written out (a channels-first LayerNorm: mean, centre, variance, scale).
NORM_STARTS = ("LayerNormalization", "ReduceMean")


def convs_into_norms(proto: onnx.ModelProto) -> list[str]:
    """Conv nodes whose output reaches a normalisation through data movement alone (no Add in
    between) -> kept float (see the module docstring)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def reaches_norm(tensor: str, depth: int = 0) -> bool:
        for node in consumers.get(tensor, []):
            if node.op_type in NORM_STARTS:
                return True
            if node.op_type in DATA_MOVEMENT and depth < 8 and \
                    any(reaches_norm(out, depth + 1) for out in node.output):
                return True
        return False

    return [n.name for n in proto.graph.node if n.op_type == "Conv" and reaches_norm(n.output[0])]


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
            reduce_range=scheme.weight_bits == 7,  # weights only; activations keep 8 bits
            nodes_to_exclude=activation_matmuls(pre_proto) + convs_into_norms(pre_proto),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True,
                           "ActivationSymmetric": scheme.activation_symmetric,
                           "QuantizeBias": scheme.quantize_bias})
        return onnx.load(dst)


def weight_bits(proto: onnx.ModelProto) -> int:
    """The bits a QDQ graph's int8 weights use: 7 when every weight integer lies in -64..64
    (see :data:`REDUCED_WEIGHT_MAX`), else 8; 0 for a graph without int8 weights."""
    inits = {i.name: i for i in proto.graph.initializer}
    weights = [inits[n.input[0]] for n in proto.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits
               and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    if not weights:
        return 0
    peak = max(int(np.abs(numpy_helper.to_array(w).astype(np.int16)).max())
               for w in weights)
    return 7 if peak <= REDUCED_WEIGHT_MAX else 8
