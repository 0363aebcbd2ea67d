# A dense MLP as an ONNX file, for the GPU probe (scripts/device/webgpu-probe.mjs): LAYERS Gemm+Relu
# layers of WIDTH x WIDTH float32 weights (4 layers of 4096: 256 MiB of weights, ~8.6 GFLOP per
# batch of 64), seeded, so a probe on a machine with no network has a large model to load and a
# call heavy enough to show what a GPU does. Usage: python3 make-mlp.py OUT.onnx [WIDTH] [LAYERS]
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
width = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
layers = int(sys.argv[3]) if len(sys.argv) > 3 else 4
rng = np.random.default_rng(7)
nodes, inits = [], []
prev = "x"
for i in range(layers):
    w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
    b = np.zeros((width,), dtype=np.float32)
    inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
    nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"h{i}"]))
    nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"]))
    prev = f"r{i}"
nodes.append(helper.make_node("Identity", [prev], ["y"]))
graph = helper.make_graph(
    nodes, "mlp",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
    inits,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, out)
print(f"wrote {out}: {layers} layers of {width}, {sum(i.raw_data.__len__() for i in inits) / 2**20:.0f} MiB of weights")
