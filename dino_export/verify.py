"""An exported file, run by the runtime users run, against PyTorch float32, with written bounds.

The file is opened with :class:`dino_runtime.Runtime` (backend and device as a user would pick
them), fed the same uint8 BGR frames a camera would give, and its outputs are compared with
the PyTorch model's on exactly the float input the runtime computed. So a check can only pass
on the code path that users execute. The one graph users do not execute on a CPU, the source of
``--trt int8``, is checked by its own arithmetic instead (ONNX Runtime, Q/DQ pairs as float ops:
``qdq_fusion=False``; see :func:`dino_export.pipeline.cpu_checks`), then its engine by TensorRT.

Bounds (per precision the file runs in): fp32 max abs error <= 1e-4 on every output; fp16
cosine >= 0.999; bf16 cosine >= 0.999 and mean mask IoU >= 0.95; int8 cosine >= 0.99 and mean
mask IoU >= 0.9. Cosines are the minimum over images of the CLS (and patch-token) embeddings.
Masks keep the smallest set of patches that holds 60 % of a head's attention mass, as the
official ``visualize_attention.py --threshold 0.6`` does; a backbone without attention (a
ConvNeXt) has no masks, and its bounds are those on cls and patch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dino_core.masks import DEFAULT_MASS, cosine, mask_iou, mass_threshold_masks
from dino_core.metadata import InputFormat
from dino_models.backbone import Backbone
from dino_runtime import Runtime
from dino_runtime.preprocess import InputSpec, Preprocessor

from .images import ImageSet, verification_sets


@dataclass(frozen=True)
class Tolerance:
    """Bounds an exported file must meet; ``None`` = not checked for this precision."""

    max_abs: float | None = None
    min_cosine: float | None = None
    min_mask_iou: float | None = None


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4),
    "fp16": Tolerance(min_cosine=0.999),
    "bf16": Tolerance(min_cosine=0.999, min_mask_iou=0.95),
    "int8": Tolerance(min_cosine=0.99, min_mask_iou=0.9),
}


@dataclass(frozen=True)
class Comparison:
    """One input set: errors of the file's outputs against PyTorch float32."""

    inputs: str
    count: int
    cls_max_abs: float
    attn_max_abs: float | None     # None: the file has no attention output
    cls_cosine: float          # minimum over images
    mask_iou: float            # mean over images and heads
    mask_iou_min: float
    patch_max_abs: float | None = None
    patch_cosine: float | None = None
    attn_registers_max_abs: float | None = None


@dataclass
class VerifyReport:
    precision: str
    tolerance: Tolerance
    rows: list[Comparison] = field(default_factory=list)
    runner: str = ""           # which backend and device ran the file

    @property
    def failures(self) -> list[str]:
        """One line per violated bound."""
        tol, out = self.tolerance, []
        for r in self.rows:
            if tol.max_abs is not None:
                worst = max(v for v in (r.cls_max_abs, r.attn_max_abs, r.patch_max_abs,
                                        r.attn_registers_max_abs) if v is not None)
                if not worst <= tol.max_abs:
                    out.append(f"{r.inputs}: max abs error {worst:.2e} > {tol.max_abs:.0e}")
            if tol.min_cosine is not None:
                worst = min(v for v in (r.cls_cosine, r.patch_cosine) if v is not None)
                if not worst >= tol.min_cosine:
                    out.append(f"{r.inputs}: cosine {worst:.5f} < {tol.min_cosine}")
            has_masks = not math.isnan(r.mask_iou)   # NaN: no attention to mask
            if tol.min_mask_iou is not None and has_masks and not r.mask_iou >= tol.min_mask_iou:
                out.append(f"{r.inputs}: attention-mask IoU {r.mask_iou:.3f} < {tol.min_mask_iou}")
        return out

    @property
    def passed(self) -> bool:
        return bool(self.rows) and not self.failures

    def table(self) -> str:
        """Plain-text table, one row per input set, then the bounds applied."""
        head = (f"{'inputs':<16}{'n':>4}{'cls max|err|':>14}{'attn max|err|':>15}"
                f"{'patch max|err|':>16}{'cos min':>10}{'mask IoU':>10}{'IoU min':>9}")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            patch = f"{r.patch_max_abs:.2e}" if r.patch_max_abs is not None else "-"
            attn = f"{r.attn_max_abs:.2e}" if r.attn_max_abs is not None else "-"
            iou, iou_min = (("-", "-") if math.isnan(r.mask_iou)
                            else (f"{r.mask_iou:.3f}", f"{r.mask_iou_min:.3f}"))
            cos = min(v for v in (r.cls_cosine, r.patch_cosine) if v is not None)
            lines.append(f"{r.inputs:<16}{r.count:>4}{r.cls_max_abs:>14.2e}{attn:>15}"
                         f"{patch:>16}{cos:>10.6f}{iou:>10}{iou_min:>9}")
        t = self.tolerance
        bounds = [f"max|err| <= {t.max_abs:.0e}" if t.max_abs is not None else "",
                  f"cos >= {t.min_cosine}" if t.min_cosine is not None else "",
                  f"mask IoU >= {t.min_mask_iou}" if t.min_mask_iou is not None else ""]
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{self.precision} bounds: {', '.join(b for b in bounds if b)} -> {verdict}")
        return "\n".join(lines)


def torch_reference(model: Backbone, x: np.ndarray) -> dict[str, np.ndarray]:
    """PyTorch float32 outputs for normalised float input (B, 3, H, W): cls (B, D), attn
    (B, heads, h, w), patch (B, N, D), attn_registers (B, heads, R) (no attention outputs for
    a backbone without attention); the model's own positions, not the export's constant."""
    with torch.no_grad():
        out = model.forward_single_pass(torch.from_numpy(x))
    gh, gw = x.shape[-2] // model.patch_size, x.shape[-1] // model.patch_size
    ref = {"cls": out.cls.numpy(), "patch": out.patch.numpy()}
    if out.attn is not None:
        ref.update(attn=out.attn.unflatten(-1, (gh, gw)).numpy(),
                   attn_registers=out.attn_registers.numpy())
    return ref


def compare(label: str, ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> Comparison:
    """One table row; outputs the file lacks are not compared (they are not in the graph)."""
    def max_abs(name: str) -> float | None:
        return float(np.abs(ref[name] - got[name]).max()) if name in got else None
    attn_got = got.get("attn")
    if attn_got is not None:
        ious = mask_iou(mass_threshold_masks(ref["attn"], DEFAULT_MASS),
                        mass_threshold_masks(attn_got, DEFAULT_MASS))
    else:
        ious = np.full(1, math.nan)
    return Comparison(
        inputs=label, count=len(ref["cls"]),
        cls_max_abs=max_abs("cls") or 0.0, attn_max_abs=max_abs("attn"),
        cls_cosine=float(cosine(ref["cls"], got["cls"]).min()) if "cls" in got else 1.0,
        mask_iou=float(ious.mean()), mask_iou_min=float(ious.min()),
        patch_max_abs=max_abs("patch"),
        patch_cosine=float(cosine(ref["patch"], got["patch"]).min()) if "patch" in got else None,
        attn_registers_max_abs=max_abs("attn_registers"))


def open_runtime(path: str | Path, backend: str = "auto", device: str = "cpu",
                 precision: str = "auto", providers: Sequence | None = None,
                 qdq_fusion: bool = True) -> Runtime:
    """The file as users open it, without masks (they are computed here for both sides), and
    without a compile cache (the file is verified under a temporary name). ``providers``,
    ``qdq_fusion``: for ONNX Runtime, as ``dino_runtime.Runtime`` takes them."""
    return Runtime(path, backend=backend, device=device, precision=precision, threshold=None,
                   batch_size=64, warmup=False, providers=providers, fit_batch=True,
                   compile_cache=False, qdq_fusion=qdq_fusion)


def verify_file(path: str | Path, model: Backbone, inputs: list[ImageSet] | None = None,
                backend: str = "auto", device: str = "cpu", precision: str = "auto",
                providers: Sequence | None = None, qdq_fusion: bool = True) -> VerifyReport:
    """Run the file through the runtime and the model on the same frames; the report says
    whether it meets the bounds of the precision it ran in. ``qdq_fusion=False`` (ONNX
    Runtime) checks an int8 graph's own arithmetic, Q/DQ pairs as float ops, not the CPU's int8
    kernels; the runner's name says so."""
    runtime = open_runtime(path, backend, device, precision, providers, qdq_fusion)
    meta = runtime.metadata
    inputs = inputs if inputs is not None else verification_sets(meta.img_size)
    ran_in = getattr(runtime.backend, "precision", meta.precision)
    # Said only where the backend did it (ONNX Runtime's own flag, not the request).
    how = "" if getattr(runtime.backend, "qdq_fusion", True) else ", Q/DQ as float ops"
    report = VerifyReport(ran_in, TOLERANCES[ran_in],
                          runner=f"{runtime.backend.name} ({runtime.device}{how})")
    # The float input the runtime computes from each frame: the reference's input, exactly.
    to_float = Preprocessor(InputSpec(meta.img_size, InputFormat.FLOAT_NCHW, meta.mean, meta.std))
    for label, bgr in inputs:
        got = runtime(bgr)
        named = {"cls": got.cls}
        for name in ("attn", "patch", "attn_registers"):
            if getattr(got, name) is not None:
                named[name] = getattr(got, name)
        x = np.stack([to_float(frame) for frame in bgr])
        report.rows.append(compare(label, torch_reference(model, x), named))
    return report
