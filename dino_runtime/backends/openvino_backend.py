"""OpenVINO backend: exported ``.onnx`` files (and OpenVINO IR ``.xml``) on CPUs, and on Intel
GPUs and NPUs by their OpenVINO device names.

The graph is read with OpenVINO's ONNX frontend alone (``read_model`` would try every frontend
on a bad file, and TensorFlow's prints parse errors on stderr), compiled for the device with the
settings in :func:`compile_config`, and run synchronously from the pipeline's inference thread
(``infer`` releases the GIL). The float precision comes from :func:`dino_core.precision.
resolve_precision`: bf16 on CPUs with native bf16 (AVX512-BF16 or AMX), else fp32; an int8 file
(QDQ, ``dino-export --precision int8``) runs its quantized products in int8 and the rest in that
float precision. Compiled models are cached in ``.<model file name>.openvino-cache`` beside the
model, keyed by OpenVINO on the graph, its weights and the settings.

Telemetry stays off: see :func:`import_openvino`; tests/runtime/test_openvino.py checks that a
run opens no connection and writes nothing under ``$HOME``.
"""
from __future__ import annotations

import ctypes
import importlib
import os
import re
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from dino_core.constants import OUTPUT_NAMES
from dino_core.errors import BackendUnavailable, ModelError, OptionError
from dino_core.metadata import ModelMetadata
from dino_core.precision import resolve_precision

from .base import (BackendCannotRun, BackendOptions, ModelOutputs, check_tensor, cpu_threads,
                   expected_tensors)

TELEMETRY = "openvino_telemetry"


def import_openvino() -> ModuleType:
    """``import openvino`` with its telemetry left off.

    Since 2024.1, ``import openvino`` runs ``openvino.tools.ovc``'s ``__init__``, which starts
    OpenVINO's telemetry: a client id and counters written under ``~/intel`` and an event sent to
    Google Analytics from a forked process, unless ``~/intel/openvino_telemetry`` holds ``0`` or
    a CI variable is set. Every place that imports the ``openvino_telemetry`` package falls back
    to OpenVINO's own no-op stub when it is not importable. So, for the duration of the import
    only, ``sys.modules`` maps it to None (Python's way to block a module): OpenVINO binds the
    stub, nothing is written to the user's home or sent, and the entry is then removed again
    (OpenVINO's own tools keep the stub for the rest of the process; other packages may import
    ``openvino_telemetry`` as before). An ``openvino`` the caller imported earlier is taken as it
    is: its telemetry followed the caller's settings.
    """
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    block = TELEMETRY not in sys.modules
    if block:
        sys.modules[TELEMETRY] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("openvino")
    finally:
        if block:
            del sys.modules[TELEMETRY]


ov = import_openvino()
PRECISIONS = ("fp32", "bf16")           # what --precision may force; int8 comes from the file
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
FROM_OV = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
INTEL_DEVICE = re.compile(r"^(gpu|npu)(\.\d+)?$", re.IGNORECASE)


_core: ov.Core | None = None
_core_lock = threading.Lock()


def shared_core() -> ov.Core:
    """The process's one ``ov.Core``: made on first use and never released.

    OpenVINO's CPU plugin (``ov::intel_cpu::SigAltStackSetup``, held by the plugin object each
    Core loads) gives the thread that loads it a larger alternate signal stack, for the signal
    frames of AMX state, and unmaps that stack when the plugin is released. Released on another
    thread (the pipeline's inference thread dropping the last backend, the garbage collector
    running in any thread) or after a second Core's plugin (two released out of order), it
    cannot put back the first thread's earlier stack: that thread keeps an alternate signal
    stack in unmapped memory, and the next signal it handles (every Python-level handler is
    installed with SA_ONSTACK: SIGINT's, torch's DataLoader SIGCHLD handler) runs there and
    dies with SIGSEGV, or writes over whatever was mapped at that address since (issue 31; the
    reproducer is in the README's troubleshooting). One Core, loaded once and never released
    (its extra reference is never dropped, so not even interpreter shutdown releases it on the
    wrong thread), leaves every thread's stack valid. Compile settings are per call, so one
    Core serves every backend.
    """
    global _core
    with _core_lock:
        if _core is None:
            core = ov.Core()
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(core))  # never freed: see above
            _core = core
        return _core


def ov_device(device: str) -> str:
    """``--device`` -> OpenVINO's device name: auto/cpu -> CPU; gpu, gpu.1, npu -> GPU, GPU.1,
    NPU (Intel GPUs and NPUs, passed through); :class:`OptionError` for anything else."""
    if device in ("auto", "cpu"):
        return "CPU"
    if INTEL_DEVICE.match(device):
        return device.upper()
    raise OptionError(f"--device {device}: the openvino backend runs on cpu, or an Intel GPU/NPU "
                      "by its OpenVINO name (GPU, GPU.1, NPU); for NVIDIA GPUs use --backend "
                      "onnxruntime or tensorrt")


def check_available(core: ov.Core, device: str, asked: str) -> None:
    """:class:`BackendUnavailable` for an Intel GPU/NPU that OpenVINO does not see (the CPU is
    always there; listing devices loads every plugin, so it is only done for the others)."""
    if device == "CPU":
        return
    seen = core.available_devices  # e.g. ["CPU", "GPU.0", "GPU.1"]; "GPU" means GPU.0
    if device not in seen and device not in {d.split(".")[0] for d in seen}:
        raise BackendUnavailable(f"--device {asked}: OpenVINO sees {', '.join(seen)} on this "
                                 "machine")


def inference_precision(requested: str, device: str) -> str | None:
    """The float precision to compile for, or None for the device's own default.

    CPUs go through the one resolver. Intel GPUs and NPUs compute in f16 by default, which
    --precision cannot ask for (it is not a CPU precision), so ``auto`` leaves their default.
    """
    if device == "CPU":
        return resolve_precision(requested, "cpu", PRECISIONS, what="the openvino backend")
    if requested == "auto":
        return None
    return resolve_precision(requested, device.lower(), PRECISIONS, gpu_bf16=False,
                             what="the openvino backend")


def cache_dir(model_path: Path) -> Path | None:
    """``.NAME.openvino-cache`` beside the model, or None where that folder cannot be written."""
    return (model_path.parent / f".{model_path.name}.openvino-cache"
            if os.access(model_path.parent, os.W_OK) else None)


def compile_config(device: str, precision: str | None, threads: int | None,
                   cache: Path | None) -> dict[str, object]:
    """The properties ``compile_model`` gets, each for a reason."""
    config: dict[str, object] = {
        # One inference in flight at a time (the pipeline batches frames itself and calls from
        # one thread): LATENCY gives it one stream with every thread. THROUGHPUT's streams
        # need several requests in flight; even with each batch split over 2 streams of 1
        # thread it was slower (ViT-S/16 int8, 2 cores: model alone 30.9 frames/s against
        # 33.3, end to end 24.0 against 25.8).
        "PERFORMANCE_HINT": "LATENCY",
    }
    if device == "CPU":
        # One compute thread per core this process may use (as ONNX Runtime's intra-op pool).
        config["INFERENCE_NUM_THREADS"] = threads or cpu_threads()
        # Threads not pinned to cores: dino-run's decode, render and encode threads share the
        # cores, and a pinned thread that one of them preempts stalls every barrier of the
        # op. ViT-S/16 int8, 2 cores, 120 frames of 01_dog.mp4 with --show-attention --save:
        # 19.3 frames/s pinned, 25.8 unpinned (model alone 33.3 both).
        config["ENABLE_CPU_PINNING"] = False
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = OV_PRECISION[precision]
    if cache is not None:
        # Compiling converts and reorders every weight; the cached blob skips that next time.
        config["CACHE_DIR"] = str(cache)
    return config


def read_graph(core: ov.Core, path: Path) -> ov.Model:
    """The graph of an ``.onnx`` (ONNX frontend only) or IR ``.xml`` file; :class:`ModelError`
    for a file that is not one, :class:`BackendCannotRun` for a graph OpenVINO cannot convert."""
    try:
        if path.suffix.lower() == ".onnx":
            frontend = ov.frontend.FrontEndManager().load_by_framework("onnx")
            return frontend.convert(frontend.load(str(path)))
        return core.read_model(str(path))
    except Exception as e:  # OpenVINO raises RuntimeError and its own frontend failure types
        reason = _reason(e)
        if "OpConversionFailure" in str(e) or "not fully converted" in str(e):
            raise BackendCannotRun(f"OpenVINO cannot convert {path.name} ({reason})") from None
        kind = "ONNX model" if path.suffix.lower() == ".onnx" else "OpenVINO IR model"
        raise ModelError(f"{path}: not a readable {kind} ({reason})") from None


def _reason(error: Exception) -> str:
    """The informative part of an OpenVINO exception, on one line: its conversion summary, or
    its last line that is not a source location."""
    text = str(error)
    if "Summary:" in text:  # "-- No conversion rule found for operations: com.microsoft.X"
        summary = text.split("Summary:", 1)[1].splitlines()
        return "; ".join(line.strip(" -") for line in summary if line.strip(" -"))[:300]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))
              and "FrontEnd API failed" not in line]
    return (useful[-1] if useful else lines[-1] if lines else type(error).__name__)[:300]


def read_metadata(model: ov.Model, where: str) -> ModelMetadata:
    """The ``dino.*`` metadata the ONNX frontend (or IR) keeps under rt_info ``framework``."""
    framework = model.get_rt_info()["framework"] if model.has_rt_info(["framework"]) else {}
    props = {key: framework[key].astype(str) for key in framework}
    return ModelMetadata.from_props(props, where)


def check_graph(model: ov.Model, meta: ModelMetadata, where: str) -> None:
    """:class:`ModelError` (one line) when the graph's input or outputs differ in type or shape
    from what the metadata says (see :func:`~.base.check_tensor`), as ONNX Runtime checks."""
    ports = {name: ("input", p) for p in model.inputs for name in p.get_names()}
    ports.update({name: ("output", p) for p in model.outputs for name in p.get_names()})
    for name, (dtype, shape) in expected_tensors(meta).items():
        if name not in ports:
            raise ModelError(f"{where}: the metadata lists output {name!r}, the graph has "
                             f"{sorted(n for p in model.outputs for n in p.get_names())}; "
                             "re-export it")
        kind, port = ports[name]
        dims = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        check_tensor(where, f"graph {kind} {name}", port.get_element_type().to_dtype().name,
                     dims, dtype, shape, meta.batch)


def run_precision(file_precision: str, computed: str) -> str:
    """What the outputs are computed in, for reporting and verification bounds: an int8 file
    stays int8; a float file computes in the lower of its own and the engine's precision."""
    if file_precision == "int8" or computed == "fp32":
        return file_precision
    return computed


class OpenVINOBackend:
    """An exported ``.onnx`` (or IR ``.xml``) file compiled by OpenVINO.

    Each batch size is compiled as a static shape (the first at load, so that a model OpenVINO
    cannot compile fails here, where ``--backend auto`` can fall back): an int8 graph compiled
    with a dynamic batch runs other kernels and loses accuracy (OpenVINO 2026.4, ViT-Tiny/16 on
    8 Imagenette photos: CLS cosine to fp32 0.981 dynamic, 0.993 static; ONNX Runtime 0.993).

    A call with a batch size not compiled yet (a video's last, partial batch; a camera's
    frames-ready count) is padded to the next compiled size, until the time spent on padding
    rows for that size exceeds what compiling it took; then it is compiled (rent or buy: never
    more than twice the cheaper of the two). A 60-frame clip at batch 8 pads its last 4 frames
    instead of compiling a fourth shape; a live source ends up with its sizes compiled.
    """

    name = "openvino"

    def __init__(self, model_path: str | os.PathLike, options: BackendOptions = BackendOptions()):
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        self.path = path
        device = ov_device(options.device)
        self.core = shared_core()
        check_available(self.core, device, options.device)
        precision = inference_precision(options.precision, device)
        self.model = read_graph(self.core, path)
        self.metadata = read_metadata(self.model, str(path))
        self._outputs = self._check_graph(self.model, path)
        self.device_name = device
        self.runs_on_host = device == "CPU"  # activations in host memory: checked before a call
        cache = cache_dir(path) if options.compile_cache else None
        self.config = compile_config(device, precision, options.threads, cache)
        self._requests: dict[int, object] = {}
        self._compile_seconds = 0.0               # the longest compile so far
        self._padding_seconds: dict[int, float] = {}  # batch size -> time spent on pad rows
        batch = self.metadata.batch
        first = batch.calls(options.batch or batch.opt)[0] if batch.dynamic else batch.fixed
        compiled = self._compile(first)
        computed = FROM_OV.get(compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
                               "fp32")
        self.float_precision = computed  # what the ops outside an int8 file's products run in
        self.precision = run_precision(self.metadata.precision, computed)
        self.device = device

    def _check_graph(self, model, path: Path) -> list[str]:
        names = [name for output in model.outputs for name in output.get_names()]
        outputs = [n for n in OUTPUT_NAMES if n in names]
        if outputs[:2] != ["cls", "attn"]:
            raise ModelError(f"{path}: outputs {names} lack cls and attn; re-export it")
        inputs = [name for i in model.inputs for name in i.get_names()]
        if self.metadata.input_name not in inputs:
            raise ModelError(f"{path}: metadata names input {self.metadata.input_name!r}, "
                             f"the graph has {inputs}")
        check_graph(model, self.metadata, str(path))
        return outputs

    def _compile(self, batch: int):
        """Compile the graph for calls of ``batch`` frames; keep its request."""
        model = self.model.clone()
        shape = model.input(self.metadata.input_name).get_partial_shape()
        shape[0] = batch
        model.reshape({self.metadata.input_name: shape})
        start = time.perf_counter()
        try:
            compiled = self.core.compile_model(model, self.device_name, self.config)
        except Exception as e:  # RuntimeError, or OpenVINO's own types
            raise BackendCannotRun(f"OpenVINO cannot compile {self.path.name} for "
                                   f"{self.device_name} ({_reason(e)})") from None
        self._requests[batch] = compiled.create_infer_request()
        self._compile_seconds = max(self._compile_seconds, time.perf_counter() - start)
        return compiled

    def _batch_for(self, n: int) -> int:
        """The compiled batch size a call of ``n`` frames runs at (see the class docstring)."""
        if n in self._requests:
            return n
        larger = [b for b in self._requests if b > n]
        if larger and self._padding_seconds.get(n, 0.0) < self._compile_seconds:
            return min(larger)
        self._compile(n)
        return n

    @property
    def compiled(self):
        """The compiled model of the first batch size (its properties are everyone's)."""
        return next(iter(self._requests.values())).get_compiled_model()

    def run(self, images: np.ndarray) -> ModelOutputs:
        """(B, 3, H, W) float32 or (B, H, W, 3) uint8 -> outputs, see ModelOutputs."""
        n = len(images)
        batch = self._batch_for(n)
        if batch > n:
            images = np.concatenate([images, np.zeros((batch - n, *images.shape[1:]),
                                                      images.dtype)])
        start = time.perf_counter()
        # share_inputs: the request reads the caller's array in place (no copy; infer is
        # synchronous). Outputs are copied (share_outputs=False): the request reuses its
        # buffers on the next call, while the pipeline still post-processes this batch.
        result = self._requests[batch].infer({self.metadata.input_name: images},
                                             share_inputs=True, share_outputs=False)
        if batch > n:
            spent = (time.perf_counter() - start) * (batch - n) / batch
            self._padding_seconds[n] = self._padding_seconds.get(n, 0.0) + spent
        named = {name: result[name][:n] for name in self._outputs}
        return ModelOutputs(named["cls"], named["attn"], named.get("patch"),
                            named.get("attn_registers"))
