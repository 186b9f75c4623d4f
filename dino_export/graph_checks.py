"""Graph-level checks of an exported file that TensorRT's ONNX parser relies on, run without a GPU.

TensorRT builds an engine from a graph whose shapes it can fix at build time. What breaks that
(and what users of other DINOv3 exports report: ``Range``/``Tile``/``If`` from RoPE code that
computes positions at run time, which the parser rejects, so that ONNX Runtime's TensorRT
provider silently falls back to CUDA) is checked here on every graph ``dino-export`` writes:

  * no control flow: ``If``, ``Loop``, ``Scan``;
  * no position or shape computation: ``Range``, ``Tile``, ``ConstantOfShape``, ``NonZero``,
    ``Sin``, ``Cos`` (positions are graph constants, per input size); ``Shape``/``Size`` only in
    a dynamic-batch graph, where they read the batch and nothing else;
  * static shapes: after ONNX shape inference every tensor's dimensions are numbers (in a
    dynamic-batch graph, once the batch is fixed: every shape is a function of the batch).
An engine itself can only be built and checked on a GPU (``scripts/gpu_engine_check.py``).
"""
from __future__ import annotations

from collections import Counter

import onnx

CONTROL_FLOW = ("If", "Loop", "Scan")
COMPUTED_SHAPES = ("Range", "Tile", "ConstantOfShape", "NonZero", "Sin", "Cos")
BATCH_READS = ("Shape", "Size")


def op_counts(proto: onnx.ModelProto) -> Counter:
    """Op type -> count over the main graph."""
    return Counter(node.op_type for node in proto.graph.node)


def static_graph_problems(proto: onnx.ModelProto, batch: int = 2) -> list[str]:
    """What keeps ``proto`` from being a static graph TensorRT parses as is; [] when none.

    A dynamic-batch graph is checked with its batch fixed to ``batch``: ONNX shape inference
    with data propagation must then give every tensor a fully numeric shape, which proves each
    shape is a function of the batch alone (the exporter's ``Shape`` reads).
    """
    symbolic = _batch_symbol(proto) is not None
    ops = op_counts(proto)
    forbidden = CONTROL_FLOW + COMPUTED_SHAPES + (() if symbolic else BATCH_READS)
    problems = [f"{ops[op]} {op} node{'s' if ops[op] > 1 else ''}" for op in forbidden if ops[op]]
    fixed = onnx.ModelProto.FromString(proto.SerializeToString())
    del fixed.graph.value_info[:]          # the exporter's hints hold the symbol: infer anew
    for value in [*fixed.graph.input, *fixed.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dim = dims[0]
            dim.Clear()
            if value in fixed.graph.input:
                dim.dim_value = batch
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True).graph
    except onnx.shape_inference.InferenceError as e:
        return problems + [f"shape inference fails ({str(e).splitlines()[0][:160]})"]
    shapes = {v.name: v.type.tensor_type for v in [*inferred.value_info, *inferred.output]}
    for node in fixed.graph.node:
        for name in node.output:
            tensor = shapes.get(name)
            if tensor is None or not tensor.HasField("shape"):
                problems.append(f"{node.op_type} output {name} has no inferred shape")
            elif any(not d.HasField("dim_value") for d in tensor.shape.dim):
                dims = [d.dim_value if d.HasField("dim_value") else "?" for d in tensor.shape.dim]
                problems.append(f"{node.op_type} output {name} has shape {dims}")
    return problems


def _batch_symbol(proto: onnx.ModelProto) -> str | None:
    """The symbolic batch of the graph input, or None for a fixed batch."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return None if not dims or dims[0].HasField("dim_value") else dims[0].dim_param
