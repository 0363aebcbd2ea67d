#!/usr/bin/python3
"""Makes model_fp16.onnx from model.onnx: float16 weights and float16 past/present/logits (half
the KV-cache memory a node holds per stream), with the arithmetic itself left in float32.

Why not a plain float16 graph: onnxruntime's CPU provider lacks float16 kernels for most ops,
and float16 attention needs care with the mask constant; CPU nodes and the tests must run this
model. So every float16 initializer and float16 graph input goes through a Cast to float32
(onnxruntime folds the weight casts once at session start), and every float output through a
Cast to float16. The I/O is then exactly what a float16 export gives.

Run: /usr/bin/python3 scripts/tiny-gpt/fp16.py [models/tiny-gpt/model.onnx] [models/tiny-gpt/model_fp16.onnx]
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def convert(src, dst):
    m = onnx.load(src)
    g = m.graph
    casts = []

    # Weights: store float16, cast back to float32 under the original name.
    for init in list(g.initializer):
        if init.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < 16:  # scalars (scale, mask constant, eps) stay exact in float32
            continue
        half = numpy_helper.from_array(arr.astype(np.float16), init.name + "_fp16")
        g.initializer.remove(init)
        g.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=init.name + "_to_fp32"))

    # Float inputs (the past key/values) arrive as float16.
    for inp in g.input:
        t = inp.type.tensor_type
        if t.elem_type == TensorProto.FLOAT:
            t.elem_type = TensorProto.FLOAT16
            inner = inp.name + "_fp32"
            for node in g.node:
                for i, name in enumerate(node.input):
                    if name == inp.name:
                        node.input[i] = inner
            casts.append(helper.make_node("Cast", [inp.name], [inner], to=TensorProto.FLOAT, name=inp.name + "_to_fp32"))

    # Float outputs (logits, presents) leave as float16.
    tail = []
    for out in g.output:
        t = out.type.tensor_type
        if t.elem_type == TensorProto.FLOAT:
            t.elem_type = TensorProto.FLOAT16
            inner = out.name + "_fp32"
            for node in g.node:
                for i, name in enumerate(node.output):
                    if name == out.name:
                        node.output[i] = inner
                for i, name in enumerate(node.input):  # a present may also feed later nodes
                    if name == out.name:
                        node.input[i] = inner
            tail.append(helper.make_node("Cast", [inner], [out.name], to=TensorProto.FLOAT16, name=out.name + "_to_fp16"))

    nodes = casts + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # stale float32 annotations of renamed values
    onnx.checker.check_model(m)
    onnx.save(m, dst)


if __name__ == "__main__":
    convert(sys.argv[1] if len(sys.argv) > 1 else "models/tiny-gpt/model.onnx",
            sys.argv[2] if len(sys.argv) > 2 else "models/tiny-gpt/model_fp16.onnx")
