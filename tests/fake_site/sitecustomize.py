"""Read by Python at start-up when this folder is on PYTHONPATH, which only tests do: with
DINO_FAKE_TENSORRT=11.x (or 10.3, 10.x) set, every process of the test sees a fake TensorRT of
that release and one CUDA device (tests/fake_tensorrt.py), so the toolkit's commands take their
TensorRT paths on a CPU."""
import os

if os.environ.get("DINO_FAKE_TENSORRT"):
    from tests.fake_tensorrt import install_globally

    install_globally(os.environ["DINO_FAKE_TENSORRT"])
