"""What every backend returns and accepts; no backend-specific imports here."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dino_core.errors import BackendUnavailable, ModelError
from dino_core.metadata import BatchSpec, InputFormat, ModelMetadata
from dino_core.precision import int8_products_saturate


class BackendCannotRun(BackendUnavailable):
    """This backend cannot run this model here, though another may: its package is installed
    but does not import, or it cannot convert or compile the graph. ``--backend auto`` then
    says so and tries the next row of the table; a backend asked for by name stops with it."""


@dataclass
class ModelOutputs:
    """One batch of model outputs, float32 numpy arrays on the host."""

    cls: np.ndarray                 # (B, D)
    attn: np.ndarray | None         # (B, heads, H/p, W/p); None: a model without attention
    patch: np.ndarray | None = None  # (B, H/p * W/p, D), when the model exports patch tokens
    attn_registers: np.ndarray | None = None  # (B, heads, R), DINOv2 with registers, when asked

    def __len__(self) -> int:
        return self.cls.shape[0]

    def take(self, rows: list[int]) -> "ModelOutputs":
        """The outputs of the frames at ``rows`` (B', ...) of this batch."""
        pick = (lambda a: None if a is None else a[rows])
        return ModelOutputs(self.cls[rows], self.attn[rows], pick(self.patch),
                            pick(self.attn_registers))

    def check_finite(self, where: str, precision: str, when: str = "on the first batch") -> None:
        """:class:`ModelError` (one line) when an output holds NaN or inf. Run on a model's
        first batch: NaN weights otherwise give NaN embeddings and empty masks without a word.
        (13 us for a batch of 8 ViT-S/16 outputs at 224x400, cls and attn, measured here.)"""
        for name in ("cls", "attn", "patch"):
            values = getattr(self, name)
            if values is not None and not np.isfinite(values).all():
                raise ModelError(f"{where}: non-finite (NaN or inf) values in the model's {name} "
                                 f"output {when}: its weights hold NaN, or it overflows in "
                                 f"{precision}; check the checkpoint it was made from")


@dataclass(frozen=True)
class BackendOptions:
    """Backend settings that do not depend on the model file."""

    device: str = "auto"            # auto | cpu | cuda | cuda:N
    precision: str = "auto"         # auto, or what the backend's table row honours (fp32, bf16)
    input_size: tuple[int, int] | None = None  # torch backend: (H, W); exported files fix it
    frame_size: tuple[int, int] | None = None  # torch backend: source (H, W); without input_size
    short_side: int = 224                      # it runs at this short side, the frame's aspect
    threads: int | None = None      # CPU threads for inference; None = all cores of this process
    providers: tuple[str, ...] | None = None   # onnxruntime: explicit execution providers
    batch: int | None = None        # frames per call the caller plans; openvino compiles for it
    compile_cache: bool = True      # openvino: keep compiled models beside the model file
    qdq_fusion: bool = True         # onnxruntime: False runs each Q/DQ pair of an int8 file as
    #                                 float ops (the graph's own arithmetic, no int8 kernels)


class Backend(Protocol):
    name: str
    metadata: ModelMetadata
    device: str                      # what actually runs, e.g. "CPUExecutionProvider"
    precision: str                   # what it computes in: the file's, or the one it resolved
    runs_on_host: bool               # True: activations live in host memory (CPU execution)

    def run(self, images: np.ndarray) -> ModelOutputs:
        """Graph input (B, 3, H, W) float32 or (B, H, W, 3) uint8 -> outputs for B frames."""


def int8_saturation_warning(where: str, backend: Backend) -> str | None:
    """A warning for an int8 file with 8-bit weights (a ``--trt int8`` graph, or a file from
    before ``--precision int8`` took 7 bits) run by CPU int8 kernels on an x86 CPU without VNNI,
    which saturate such weights (:func:`dino_core.precision.int8_products_saturate`); None
    otherwise."""
    meta = backend.metadata
    if (meta.precision != "int8" or meta.weight_bits == 7 or not backend.runs_on_host
            or not getattr(backend, "qdq_fusion", True) or not int8_products_saturate()):
        return None
    bits = "8-bit weights" if meta.weight_bits == 8 else "weights of 8 bits (no dino.weight_bits)"
    return (f"{where}: an int8 file with {bits} on a CPU without VNNI, whose int8 products "
            "saturate them: expect a CLS cosine near 0.8-0.9 to the float model; export it again "
            "with dino-export --precision int8 (7-bit weights)")


def required_outputs(meta: ModelMetadata) -> tuple[str, ...]:
    """The outputs a file must have: cls, and attn unless the model has no attention."""
    return ("cls", "attn") if meta.has_attention else ("cls",)


def check_outputs(names: list[str], meta: ModelMetadata, where: str) -> None:
    """:class:`ModelError` (one line) when the graph lacks an output every file of its kind has."""
    needed = required_outputs(meta)
    if [n for n in needed if n in names] != list(needed):
        raise ModelError(f"{where}: outputs {names} lack {' and '.join(needed)}; re-export it")


def expected_tensors(meta: ModelMetadata) -> dict[str, tuple[str, list]]:
    """Tensor name -> (numpy dtype name, shape with "B" for the batch) that the metadata
    promises: the input, and every output it lists (float32 at every precision)."""
    h, w = meta.img_size
    if meta.input_format is InputFormat.UINT8_NHWC:
        tensors = {meta.input_name: ("uint8", ["B", h, w, 3])}
    else:
        tensors = {meta.input_name: ("float32", ["B", 3, h, w])}
    tensors.update({name: ("float32", list(shape)) for name, shape in meta.outputs.items()})
    return tensors


def check_tensor(where: str, what: str, dtype: str | None, dims: list[int | None],
                 expected_dtype: str | None, expected: list, batch: BatchSpec) -> None:
    """:class:`ModelError` (one line) when a graph/engine tensor (``dims``: None where the
    file leaves a dimension open) disagrees with the metadata: the first batch would fail inside
    the runtime, or (an output) run with the wrong number of heads or tokens.

    The batch dimension: an open one takes any batch, a fixed one only that batch. The others
    must be equal where the file fixes them. The types (numpy names) when given."""
    if dtype == expected_dtype and _same_shape(dims, expected, batch):
        return
    shown = ["B" if i == 0 and d is None else d for i, d in enumerate(dims)]
    batch_text = f"dynamic {batch.min}..{batch.max}" if batch.is_dynamic else f"= {batch.fixed}"
    types = (f"{dtype} ", f"{expected_dtype} ") if dtype is not None else ("", "")
    raise ModelError(f"{where}: {what} is {types[0]}with shape {shown}, the metadata says "
                     f"{types[1]}{expected} with B {batch_text}; re-export it with dino-export")


def _same_shape(dims: list[int | None], expected: list, batch: BatchSpec) -> bool:
    if len(dims) != len(expected):
        return False
    first, *rest = dims
    if first is not None and (batch.is_dynamic or first != batch.fixed):
        return False
    return all(d is None or d == e for d, e in zip(rest, expected[1:]))


def cpu_threads() -> int:
    """Cores this process may run on (cgroup/affinity aware, unlike os.cpu_count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
