"""float32 ONNX -> float16 for GPU execution providers.

LayerNormalization and Softmax stay float32 (their reductions lose accuracy in fp16, and
TensorRT would otherwise warn about LayerNorm overflow); inputs and outputs stay float32, so a
runtime feeds the same tensors as for the fp32 file.
"""
from __future__ import annotations

import onnx

KEEP_FP32 = ["LayerNormalization", "Softmax"]


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(KEEP_FP32))
    half = convert_float_to_float16(proto, keep_io_types=True, op_block_list=block)
    # The converter leaves stale float32 value_info entries on tensors that became float16;
    # they are optional hints, and a full checker pass rejects the contradiction.
    del half.graph.value_info[:]
    return topological_sort(drop_duplicate_casts(half))


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
