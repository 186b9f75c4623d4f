"""float32 ONNX -> float16 for GPU execution providers.

LayerNormalization and Softmax stay float32 (their reductions lose accuracy in fp16, and
TensorRT would otherwise warn about LayerNorm overflow); inputs and outputs stay float32, so a
runtime feeds the same tensors as for the fp32 file.

Beyond those, what must stay float32 depends on the weights, not the architecture: large ViTs
carry a few high-norm tokens and channels (Darcet et al. 2023 for DINOv2; DINOv3's 7B keeps its
RoPE, and its official code its norms, in higher precision), and a residual stream or a SwiGLU
product beyond float16's largest value (65504) becomes inf. So the float32 graph is first run on
check images (:func:`activation_peaks`: one max |x| per tensor, computed in the graph) and every
node that reads or writes a tensor above :data:`FP16_SAFE` stays float32
(:func:`overflowing_nodes`); the rest is converted.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper

KEEP_FP32 = ["LayerNormalization", "Softmax"]
# A quarter of float16's largest value: a tensor that reaches it on the check images is kept
# float32, with headroom for inputs that drive it further than they did.
FP16_SAFE = 65504.0 / 4


def to_fp16(proto: onnx.ModelProto, check_feeds: Iterable[np.ndarray] = ()) -> onnx.ModelProto:
    """``proto`` in float16 except :data:`KEEP_FP32` and the nodes whose activations on
    ``check_feeds`` (graph inputs, e.g. a few images) would not fit in float16."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(KEEP_FP32))
    proto = named_nodes(proto)
    keep = overflowing_nodes(proto, activation_peaks(proto, check_feeds))
    half = convert_float_to_float16(proto, keep_io_types=True, op_block_list=block,
                                    node_block_list=keep)
    # The converter leaves stale float32 value_info entries on tensors that became float16;
    # they are optional hints, and a full checker pass rejects the contradiction.
    del half.graph.value_info[:]
    return topological_sort(drop_round_trips(drop_duplicate_casts(half)))


def drop_round_trips(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Between two float32 nodes the converter casts to float16 and back (``Cast(to=fp16)`` ->
    ``Cast(to=fp32)``), which would overflow the very tensors kept float32 for their range:
    their float32 consumers read the float32 value directly; a float16 cast no longer read is
    dropped."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    rename: dict[str, str] = {}
    for node in proto.graph.node:
        first = producer.get(node.input[0]) if node.op_type == "Cast" else None
        if (first is not None and first.op_type == "Cast" and _cast_to(node) == onnx.TensorProto.FLOAT
                and _cast_to(first) == onnx.TensorProto.FLOAT16):
            rename[node.output[0]] = first.input[0]
    nodes = [n for n in proto.graph.node if n.output[0] not in rename]
    for node in nodes:
        node.input[:] = [rename.get(name, name) for name in node.input]
    outputs = {o.name for o in proto.graph.output}
    used = {name for n in nodes for name in n.input} | outputs
    nodes = [n for n in nodes if n.op_type != "Cast" or n.output[0] in used]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def named_nodes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Every node with a unique name (the converter blocks nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    return proto


def activation_peaks(proto: onnx.ModelProto, feeds: Iterable[np.ndarray]) -> dict[str, float]:
    """max |x| over ``feeds`` of every float32 tensor a node computes; {} without feeds.

    The graph gets one ``ReduceMax(Abs(x))`` output per tensor, so a run returns scalars and
    never holds the activations themselves (a ViT-L at 448x800 would need gigabytes).
    """
    feeds = list(feeds)
    if not feeds:
        return {}
    import onnxruntime as ort
    typed = onnx.shape_inference.infer_shapes(proto).graph
    floats = {v.name for v in [*typed.value_info, *typed.output]
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    names = [o for node in proto.graph.node for o in node.output if o in floats]
    probe = onnx.ModelProto.FromString(proto.SerializeToString())
    for k, name in enumerate(names):
        probe.graph.node.extend([
            helper.make_node("Abs", [name], [f"__peak{k}_abs"]),
            helper.make_node("ReduceMax", [f"__peak{k}_abs"], [f"__peak{k}"], keepdims=0)])
        probe.graph.output.append(helper.make_tensor_value_info(f"__peak{k}",
                                                                onnx.TensorProto.FLOAT, []))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    outputs = [f"__peak{k}" for k in range(len(names))]
    peaks = np.zeros(len(names))
    for feed in feeds:
        peaks = np.maximum(peaks, np.asarray(session.run(outputs, {input_name: feed}), np.float64))
    return dict(zip(names, peaks.tolist()))


def overflowing_nodes(proto: onnx.ModelProto, peaks: dict[str, float],
                      limit: float = FP16_SAFE) -> list[str]:
    """Names of the nodes that read or write a tensor whose peak exceeds ``limit``."""
    return [node.name for node in proto.graph.node
            if any(peaks.get(t, 0.0) > limit for t in (*node.input, *node.output))]


def drop_duplicate_casts(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The converter emits the fp32 Cast of an initializer shared by two blocked nodes (the
    LayerNorm weights) once per consumer, with the same output name; keep the first."""
    defined: set[str] = set()
    nodes = []
    for node in proto.graph.node:
        if node.op_type == "Cast" and all(o in defined for o in node.output):
            continue
        defined.update(node.output)
        nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def topological_sort(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The converter appends the input/output Casts at the end of the node list; ONNX wants
    producers before consumers. Stable: nodes keep their order where it is already valid."""
    g = proto.graph
    ready = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"fp16 graph has a cycle or a missing input at {rest[0].name}")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)
    return proto
