"""The one table of backends: name -> module, class, the files it reads, what it needs.

Adding a backend is adding a row here and a module beside this file. Modules are imported only
when their backend is used, so a missing optional package (torch, tensorrt) costs nothing until
asked for, and then fails with a one-line :class:`BackendUnavailable` that says what to install.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from dino_core.errors import BackendUnavailable, ModelError, OptionError

from .base import Backend, BackendOptions, ModelOutputs


@dataclass(frozen=True)
class BackendEntry:
    name: str
    module: str                   # relative to this package
    class_name: str
    suffixes: tuple[str, ...]     # model files it reads
    packages: tuple[str, ...]     # importable packages it needs
    install_hint: str
    precisions: tuple[str, ...] = ()  # --precision values it honours besides auto; () = the file's

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
        module = importlib.import_module(f"{__name__}.{self.module}")
        return getattr(module, self.class_name)(model_path, options)


def _importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ImportError:  # an import hook that refuses the package
        return False


BACKENDS: dict[str, BackendEntry] = {e.name: e for e in (
    BackendEntry("tensorrt", "trt_backend", "TensorRTBackend", (".engine", ".plan"),
                 ("tensorrt",), "pip install 'dino-edge[trt]' (NVIDIA GPU only)"),
    BackendEntry("onnxruntime", "ort_backend", "OrtBackend", (".onnx",),
                 ("onnxruntime",), "pip install onnxruntime (or onnxruntime-gpu)"),
    BackendEntry("torch", "torch_backend", "TorchBackend", (".pth", ".pt", ".safetensors"),
                 ("torch", "dino_models"), "pip install 'dino-edge[export]' (PyTorch), or export "
                 "the checkpoint with dino-export and run the .onnx file", ("fp32", "bf16")),
)}
BACKEND_CHOICES = ("auto",) + tuple(BACKENDS)


def backend_for(model_path: str | os.PathLike, name: str = "auto") -> BackendEntry:
    """The table row that runs ``model_path``: by suffix for ``auto``, else checked against it."""
    suffix = Path(model_path).suffix.lower()
    readers = [e for e in BACKENDS.values() if suffix in e.suffixes]
    if name == "auto":
        if not readers:
            known = ", ".join(s for e in BACKENDS.values() for s in e.suffixes)
            raise ModelError(f"{model_path}: unknown model type {suffix or '(no suffix)'!r}; "
                             f"expected one of {known}")
        return readers[0]
    if name not in BACKENDS:
        raise OptionError(f"unknown backend {name!r}; choose from {', '.join(BACKEND_CHOICES)}")
    entry = BACKENDS[name]
    if suffix not in entry.suffixes:
        other = f"; {suffix} files run with --backend {readers[0].name}" if readers else ""
        raise ModelError(f"--backend {name} reads {', '.join(entry.suffixes)} files, "
                         f"not {Path(model_path).name}{other}")
    return entry


def load_backend(model_path: str | os.PathLike, name: str = "auto",
                 options: BackendOptions = BackendOptions()) -> Backend:
    """Open ``model_path`` with the backend ``name`` (or the one its suffix calls for)."""
    if not Path(model_path).exists():
        raise ModelError(f"{model_path}: no such model file")
    return backend_for(model_path, name).load(model_path, options)


__all__ = ["BACKENDS", "BACKEND_CHOICES", "Backend", "BackendEntry", "BackendOptions",
           "ModelOutputs", "backend_for", "load_backend"]
