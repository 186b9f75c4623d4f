"""The one table of backends: name -> module, class, the files it reads, the devices it runs
on, what it needs.

Adding a backend is adding a row here and a module beside this file. Modules are imported only
when their backend is used, so a missing optional package (torch, tensorrt, openvino) costs
nothing until asked for, and then fails with a one-line :class:`BackendUnavailable` that says
what to install.

``--backend auto`` takes the rows in table order, which is the order of measured speed on each
device (docs/benchmarks/runtime.md): the first row that reads the file's type, runs on the device
(``--device auto`` is cuda when an NVIDIA GPU is visible, else cpu) and is installed; on an
x86 CPU without VNNI, int8 ``.onnx`` files take ONNX Runtime before OpenVINO (:func:`int8_order`).
When that row cannot run the model here (:class:`BackendCannotRun`: its package does not import, or it
cannot convert or compile the graph), a warning says so and the next such row is tried.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dino_core.errors import BackendUnavailable, ModelError, OptionError

from dino_core.precision import int8_products_saturate

from .base import Backend, BackendCannotRun, BackendOptions, ModelOutputs, int8_saturation_warning
from .onnx_props import exported_precision
from . import cuda

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendEntry:
    name: str
    module: str                   # relative to this package
    class_name: str
    suffixes: tuple[str, ...]     # model files it reads
    packages: tuple[str, ...]     # importable packages it needs
    install_hint: str
    precisions: tuple[str, ...] = ()  # --precision values it honours besides auto; () = the file's
    devices: tuple[str, ...] = ("cpu",)  # device kinds it runs on (see device_kind)

    def missing(self) -> list[str]:
        return [p for p in self.packages if not _importable(p)]

    def check_precision(self, precision: str) -> None:
        """:class:`OptionError` for a ``--precision`` this backend cannot honour."""
        if precision == "auto" or precision in self.precisions:
            return
        if not self.precisions:
            raise OptionError(f"--precision {precision}: the {self.name} backend runs a file in "
                              "the precision it was exported in; export one with dino-export "
                              f"--precision, or leave --precision at auto")
        raise OptionError(f"--precision {precision}: the {self.name} backend takes auto, "
                          f"{', '.join(self.precisions)}")

    def load(self, model_path: str | os.PathLike, options: BackendOptions) -> Backend:
        self.check_precision(options.precision)
        missing = self.missing()
        if missing:
            raise BackendUnavailable(f"backend {self.name} needs {', '.join(missing)}: "
                                     f"{self.install_hint}")
        try:
            module = importlib.import_module(f"{__name__}.{self.module}")
        except (ImportError, OSError) as e:  # installed, but its import or libraries fail
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise BackendCannotRun(f"backend {self.name}: {', '.join(self.packages)} is "
                                   f"installed but does not import ({first}); reinstall it: "
                                   f"{self.install_hint}") from None
        return getattr(module, self.class_name)(model_path, options)


def _importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ImportError:  # an import hook that refuses the package
        return False


# Table order is auto's order: the fastest row first on each device kind (measured, see the
# module docstring). OpenVINO before ONNX Runtime on CPUs: 1.1x for fp32 files at fp32, about
# 2x with bf16 on CPUs with native bf16, 1.4-1.5x for int8 files (docs/benchmarks/runtime.md).
BACKENDS: dict[str, BackendEntry] = {e.name: e for e in (
    BackendEntry("tensorrt", "trt_backend", "TensorRTBackend", (".engine", ".plan"),
                 ("tensorrt",), "pip install 'dino-edge[trt]' (NVIDIA GPU only)",
                 devices=("cuda",)),
    BackendEntry("openvino", "openvino_backend", "OpenVINOBackend", (".onnx", ".xml"),
                 ("openvino",), "pip install 'dino-edge[openvino]'", ("fp32", "bf16"),
                 devices=("cpu", "gpu", "npu")),
    BackendEntry("onnxruntime", "ort_backend", "OrtBackend", (".onnx",),
                 ("onnxruntime",), "pip install onnxruntime (or onnxruntime-gpu)",
                 devices=("cpu", "cuda")),
    BackendEntry("torch", "torch_backend", "TorchBackend", (".pth", ".pt", ".safetensors"),
                 ("torch", "dino_models"), "pip install 'dino-edge[export]' (PyTorch), or export "
                 "the checkpoint with dino-export and run the .onnx file", ("fp32", "bf16"),
                 devices=("cpu", "cuda")),
)}
BACKEND_CHOICES = ("auto",) + tuple(BACKENDS)
_INTEL_DEVICE = re.compile(r"^(gpu|npu)(\.\d+)?$")


def device_kind(device: str) -> str:
    """``--device`` -> the kind of device a row runs on: cpu, cuda, gpu or npu (Intel devices
    by their OpenVINO names: GPU, GPU.1, NPU); ``auto`` is cuda when the NVIDIA driver reports
    a GPU, else cpu."""
    name = device.lower()
    if name == "auto":
        return "cuda" if cuda.cuda_device_count() else "cpu"
    if name == "cpu" or name == "cuda" or name.startswith("cuda:"):
        return name.split(":")[0]
    match = _INTEL_DEVICE.match(name)
    if match:
        return match.group(1)
    raise OptionError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N, or an Intel "
                      "GPU/NPU by its OpenVINO name (GPU, GPU.1, NPU)")


def _readers(model_path: str | os.PathLike) -> list[BackendEntry]:
    suffix = Path(model_path).suffix.lower()
    readers = [e for e in BACKENDS.values() if suffix in e.suffixes]
    if not readers:
        known = ", ".join(sorted({s for e in BACKENDS.values() for s in e.suffixes}))
        raise ModelError(f"{model_path}: unknown model type {suffix or '(no suffix)'!r}; "
                         f"expected one of {known}")
    return readers


def auto_rows(model_path: str | os.PathLike, device: str = "auto") -> list[BackendEntry]:
    """The rows ``--backend auto`` tries for ``model_path`` on ``device``, in order: those that
    read the file, run on the device and are installed. When none is installed, the first
    reader alone (loading it says what to install; one that does not run on the device says
    which devices it needs). An int8 ``.onnx`` file on an x86 CPU without VNNI goes to ONNX
    Runtime first (:func:`int8_order`)."""
    readers = _readers(model_path)
    kind = device_kind(device)
    fits = [e for e in readers if kind in e.devices] or readers[:1]
    rows = [e for e in fits if not e.missing()] or fits[:1]
    return int8_order(rows, model_path) if kind == "cpu" else rows


def int8_order(rows: list[BackendEntry], model_path: str | os.PathLike) -> list[BackendEntry]:
    """ONNX Runtime before OpenVINO for an int8 ``.onnx`` file on a CPU whose int8 products
    saturate (x86 without VNNI): there OpenVINO's int8 kernels run ViT-S/16 at 0.62x its own
    fp32 and 0.42x ONNX Runtime's int8 (9.8 against 23.5 frames/s at batch 8, AMD EPYC with
    AVX2 only; docs/benchmarks/cpu-without-vnni.md). With VNNI, OpenVINO stays first."""
    names = [e.name for e in rows]
    if ("openvino" not in names or "onnxruntime" not in names
            or Path(model_path).suffix.lower() != ".onnx" or not int8_products_saturate()
            or exported_precision(model_path) != "int8"):
        return rows
    return sorted(rows, key=lambda e: e.name != "onnxruntime")


def backend_for(model_path: str | os.PathLike, name: str = "auto",
                device: str = "auto") -> BackendEntry:
    """The table row that runs ``model_path``: auto's first choice, else ``name`` checked
    against the file's type and the device."""
    if name == "auto":
        return auto_rows(model_path, device)[0]
    if name not in BACKENDS:
        raise OptionError(f"unknown backend {name!r}; choose from {', '.join(BACKEND_CHOICES)}")
    entry = BACKENDS[name]
    suffix = Path(model_path).suffix.lower()
    if suffix not in entry.suffixes:
        readers = [e for e in BACKENDS.values() if suffix in e.suffixes]
        other = f"; {suffix} files run with --backend {readers[0].name}" if readers else ""
        raise ModelError(f"--backend {name} reads {', '.join(entry.suffixes)} files, "
                         f"not {Path(model_path).name}{other}")
    kind = device_kind(device)
    if kind in ("gpu", "npu") and kind not in entry.devices:
        raise OptionError(f"--device {device} is an OpenVINO device; --backend {name} runs on "
                          f"{', '.join(entry.devices)}: use --backend openvino or auto")
    return entry


def load_backend(model_path: str | os.PathLike, name: str = "auto",
                 options: BackendOptions = BackendOptions()) -> Backend:
    """Open ``model_path`` with the backend ``name``, or with auto's rows in turn (see the
    module docstring); a warning when its int8 kernels saturate the file's weights on this CPU
    (:func:`~.base.int8_saturation_warning`)."""
    if not Path(model_path).exists():
        raise ModelError(f"{model_path}: no such model file")
    backend = _load(model_path, name, options)
    warning = int8_saturation_warning(Path(model_path).name, backend)
    if warning:
        log.warning(warning)
    return backend


def _load(model_path: str | os.PathLike, name: str, options: BackendOptions) -> Backend:
    if name != "auto":
        return backend_for(model_path, name, options.device).load(model_path, options)
    rows = auto_rows(model_path, options.device)
    for entry, following in zip(rows, rows[1:]):
        try:
            return entry.load(model_path, options)
        except BackendCannotRun as e:
            log.warning(f"{e}; running {Path(model_path).name} on {following.name} instead")
    return rows[-1].load(model_path, options)


def markdown_table() -> str:
    """The README's table of backends, in auto's order (kept in sync by a test)."""
    rows = ["| backend (auto's order) | reads | devices | `--precision` | needs |",
            "| --- | --- | --- | --- | --- |"]
    for e in BACKENDS.values():
        precision = ", ".join(("auto",) + e.precisions) if e.precisions else "the file's"
        rows.append(f"| `{e.name}` | {', '.join(f'`{s}`' for s in e.suffixes)} | "
                    f"{', '.join(e.devices)} | {precision} | `{e.install_hint}` |")
    return "\n".join(rows)


__all__ = ["BACKENDS", "BACKEND_CHOICES", "Backend", "BackendCannotRun", "BackendEntry",
           "BackendOptions", "ModelOutputs", "auto_rows", "backend_for", "device_kind",
           "load_backend", "markdown_table"]
