"""ONNX Runtime vs PyTorch on real and random images, with written-down tolerances.

Tolerances (issue 4): fp32 max abs error <= 1e-4 on every output; fp16 cosine >= 0.999;
int8 cosine >= 0.99 and mean IoU of the thresholded attention masks >= 0.9. Cosines are the
minimum over images of the CLS (and patch-token) embeddings. Masks keep the smallest set of
patches that holds 60 % of a head's attention mass, as the official ``visualize_attention.py
--threshold 0.6`` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dino_runtime.metadata import ModelMetadata
from dino_train.models import VisionTransformer

from .images import normalize_bgr, random_images, real_images

MASK_MASS = 0.6


@dataclass(frozen=True)
class Tolerance:
    """Bounds an exported file must meet; ``None`` = not checked for this precision."""

    max_abs: float | None = None
    min_cosine: float | None = None
    min_mask_iou: float | None = None


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4),
    "fp16": Tolerance(min_cosine=0.999),
    "int8": Tolerance(min_cosine=0.99, min_mask_iou=0.9),
}


@dataclass(frozen=True)
class Comparison:
    """One input set: errors of the ONNX outputs against PyTorch float32."""

    inputs: str
    count: int
    cls_max_abs: float
    attn_max_abs: float
    cls_cosine: float          # minimum over images
    mask_iou: float            # mean over images and heads
    mask_iou_min: float
    patch_max_abs: float | None = None
    patch_cosine: float | None = None


@dataclass
class VerifyReport:
    precision: str
    tolerance: Tolerance
    rows: list[Comparison] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        """One line per violated bound."""
        tol, out = self.tolerance, []
        for r in self.rows:
            if tol.max_abs is not None:
                worst = max(v for v in (r.cls_max_abs, r.attn_max_abs, r.patch_max_abs)
                            if v is not None)
                if not worst <= tol.max_abs:
                    out.append(f"{r.inputs}: max abs error {worst:.2e} > {tol.max_abs:.0e}")
            if tol.min_cosine is not None:
                worst = min(v for v in (r.cls_cosine, r.patch_cosine) if v is not None)
                if not worst >= tol.min_cosine:
                    out.append(f"{r.inputs}: cosine {worst:.5f} < {tol.min_cosine}")
            if tol.min_mask_iou is not None and not r.mask_iou >= tol.min_mask_iou:
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
            cos = min(v for v in (r.cls_cosine, r.patch_cosine) if v is not None)
            lines.append(f"{r.inputs:<16}{r.count:>4}{r.cls_max_abs:>14.2e}{r.attn_max_abs:>15.2e}"
                         f"{patch:>16}{cos:>10.6f}{r.mask_iou:>10.3f}{r.mask_iou_min:>9.3f}")
        t = self.tolerance
        bounds = [f"max|err| <= {t.max_abs:.0e}" if t.max_abs is not None else "",
                  f"cos >= {t.min_cosine}" if t.min_cosine is not None else "",
                  f"mask IoU >= {t.min_mask_iou}" if t.min_mask_iou is not None else ""]
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{self.precision} bounds: {', '.join(b for b in bounds if b)} -> {verdict}")
        return "\n".join(lines)


def attention_masks(attn: np.ndarray, mass: float = MASK_MASS) -> np.ndarray:
    """Attention (B, heads, h, w) -> bool masks of the same shape holding ``mass`` of each head.

    Patches are sorted by weight; those whose cumulative normalised weight (ascending) exceeds
    ``1 - mass`` are kept, i.e. the largest ones that together make up ``mass``.
    """
    flat = attn.reshape(*attn.shape[:2], -1).astype(np.float64)
    order = np.argsort(flat, axis=-1)
    sorted_vals = np.take_along_axis(flat, order, axis=-1)
    cum = np.cumsum(sorted_vals / sorted_vals.sum(-1, keepdims=True), axis=-1)
    keep_sorted = cum > (1 - mass)
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return keep.reshape(attn.shape)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU per (image, head) of two bool mask arrays (B, heads, h, w) -> (B, heads)."""
    inter = (a & b).sum(axis=(-2, -1))
    union = (a | b).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (B, ...) arrays, flattened per row -> (B,)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def torch_reference(model: VisionTransformer, bgr: np.ndarray) -> dict[str, np.ndarray]:
    """PyTorch float32 outputs for uint8 BGR images: cls (B, D), attn (B, heads, h, w),
    patch (B, N, D); the model's own interpolation, not the export's constant."""
    x = torch.from_numpy(normalize_bgr(bgr))
    with torch.no_grad():
        cls, patch, attn = model.forward_features_and_attention(x)
    gh, gw = x.shape[-2] // model.patch_size, x.shape[-1] // model.patch_size
    return {"cls": cls.numpy(), "patch": patch.numpy(),
            "attn": attn.unflatten(-1, (gh, gw)).numpy()}


class OnnxRunner:
    """An ONNX Runtime session (CPU unless ``providers`` says otherwise) fed uint8 BGR images
    in chunks of the file's batch."""

    def __init__(self, path: str | Path, meta: ModelMetadata, threads: int = 0,
                 providers: list | None = None) -> None:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts,
                                            providers=providers or ["CPUExecutionProvider"])
        self.meta = meta
        self.names = [o.name for o in self.session.get_outputs()]

    def chunk(self) -> int:
        spec = self.meta.batch
        return int(spec.split(",")[-1]) if spec.startswith("dynamic:") else int(spec)

    def __call__(self, bgr: np.ndarray) -> dict[str, np.ndarray]:
        n, step = len(bgr), self.chunk()
        pieces = []
        for i in range(0, n, step):
            part = bgr[i:i + step]
            pad = step - len(part) if not self.meta.batch.startswith("dynamic:") else 0
            if pad:  # a fixed batch: repeat the last image, drop its outputs below
                part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
            feed = part if self.meta.input_format == "uint8_nhwc_bgr" else normalize_bgr(part)
            outs = self.session.run(None, {self.meta.input_name: feed})
            pieces.append([o[:len(part) - pad] for o in outs])
        return {name: np.concatenate([p[k] for p in pieces]).astype(np.float32)
                for k, name in enumerate(self.names)}


def compare(label: str, ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> Comparison:
    """One table row; outputs the file lacks count as zero error (they are not in the graph)."""
    def max_abs(name: str) -> float | None:
        return float(np.abs(ref[name] - got[name]).max()) if name in got else None
    attn_ref = ref["attn"]
    attn_got = got.get("attn")
    if attn_got is not None:
        ious = mask_iou(attention_masks(attn_ref), attention_masks(attn_got))
    else:
        ious = np.full(1, math.nan)
    return Comparison(
        inputs=label, count=len(ref["cls"]),
        cls_max_abs=max_abs("cls") or 0.0, attn_max_abs=max_abs("attn") or 0.0,
        cls_cosine=float(cosine(ref["cls"], got["cls"]).min()) if "cls" in got else 1.0,
        mask_iou=float(ious.mean()), mask_iou_min=float(ious.min()),
        patch_max_abs=max_abs("patch"),
        patch_cosine=float(cosine(ref["patch"], got["patch"]).min()) if "patch" in got else None)


def verification_inputs(size: tuple[int, int], real: int = 8, rand: int = 4
                        ) -> list[tuple[str, np.ndarray]]:
    """Real photos (Imagenette when present, else synthetic) and uniform-noise images."""
    label, imgs = real_images(real, size)
    return [(label, imgs), ("random", random_images(rand, size, seed=1))]


def verify_onnx(path: str | Path, model: VisionTransformer, meta: ModelMetadata,
                inputs: list[tuple[str, np.ndarray]] | None = None, threads: int = 0
                ) -> VerifyReport:
    """Run the file and the model on the same images; the report says whether it passes."""
    return verify_runner(OnnxRunner(path, meta, threads), model, meta, inputs)


def verify_runner(runner, model: VisionTransformer, meta: ModelMetadata,
                  inputs: list[tuple[str, np.ndarray]] | None = None) -> VerifyReport:
    """``runner(bgr) -> {output name: array}`` (ONNX Runtime or an engine) against PyTorch,
    with the tolerance of ``meta.precision``."""
    inputs = inputs if inputs is not None else verification_inputs(tuple(meta.img_size))
    report = VerifyReport(meta.precision, TOLERANCES[meta.precision])
    for label, bgr in inputs:
        report.rows.append(compare(label, torch_reference(model, bgr), runner(bgr)))
    return report
