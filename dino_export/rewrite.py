"""Graph rewrites applied after tracing, each one checked by the caller against the original.

``squeeze_to_reshape``: Squeeze/Unsqueeze whose output shape is known (at most the batch
symbolic) become Reshape with a constant shape. Same computation for every runtime, but
importers that only read the opset-11 form of Squeeze (``axes`` as an attribute, as in
OpenCV's DNN module up to 4.7) can then load the graph.

``strip_node_metadata``: the exporter records a Python stack trace (with local file paths) on
every node; it is of no use to a runtime and does not belong in a distributed file.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _shapes(proto: onnx.ModelProto) -> dict[str, list[int | None]]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    g = inferred.graph
    out = {}
    for v in [*g.value_info, *g.output, *g.input]:
        dims = v.type.tensor_type.shape.dim
        out[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return out


def squeeze_to_reshape(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` with static-shape Squeeze/Unsqueeze nodes replaced by Reshape."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    shapes = _shapes(proto)
    g = proto.graph
    nodes = []
    for node in g.node:
        shape = shapes.get(node.output[0]) if node.op_type in ("Squeeze", "Unsqueeze") else None
        if shape is None or sum(d is None for d in shape) > 1:
            nodes.append(node)
            continue
        name = f"{node.output[0]}__shape"
        target = np.array([-1 if d is None else d for d in shape], np.int64)
        g.initializer.append(numpy_helper.from_array(target, name))
        nodes.append(helper.make_node("Reshape", [node.input[0], name], list(node.output),
                                      name=node.name))
    del g.node[:]
    g.node.extend(nodes)
    return proto


def strip_node_metadata(proto: onnx.ModelProto) -> onnx.ModelProto:
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    return proto
