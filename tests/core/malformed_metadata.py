"""Malformed ``dino.*`` metadata values, shared by the metadata, ONNX and engine-sidecar tests.

Each case: (id, key, raw JSON text or None to delete the key, what the one-line error says).
The valid map they start from is :func:`valid_metadata` (the tiny test model's: ViT-Tiny/16,
192 wide, 3 heads, 64x96, dynamic batch 1..16). Before the checks on read, most of these
were tracebacks at warm-up or in the first batch, or ran to exit 0 with NaN or wrong output.
"""
from __future__ import annotations

from dino_core.metadata import ModelMetadata

DEEP = "[" * 100_000 + "]" * 100_000


def valid_metadata() -> ModelMetadata:
    return ModelMetadata(
        arch="vit_tiny", patch_size=16, embed_dim=192, num_heads=3, depth=2, img_size=(64, 96),
        outputs={"cls": ["B", 192], "attn": ["B", 3, 4, 6], "patch": ["B", 24, 192]},
        batch="dynamic:1,4,16")


MALFORMED: list[tuple[str, str, str | None, str]] = [
    ("huge-img-size", "img_size", "[100000, 100000]", "img_size 100000: expected an integer in"),
    ("img-size-string", "img_size", '"224"', "img_size '224': expected [H, W]"),
    ("img-size-float", "img_size", "[64.0, 96.0]", "img_size 64.0: expected an integer"),
    ("img-size-not-multiple", "img_size", "[64, 90]", "is not a multiple of the patch size 16"),
    ("short-mean", "mean", "[0.5, 0.5]", "mean [0.5, 0.5]: expected three numbers"),
    ("nan-mean", "mean", "[NaN, 0.456, 0.406]", "mean [nan, 0.456, 0.406]: expected values"),
    ("mean-out-of-range", "mean", "[5, 5, 5]", "mean [5.0, 5.0, 5.0]: expected values in 0..1"),
    ("zero-std", "std", "[0, 0, 0]", "std [0.0, 0.0, 0.0]: expected values in 0.001..10"),
    ("infinite-std", "std", "[Infinity, 1, 1]", "std [inf, 1.0, 1.0]: expected values"),
    ("zero-patch", "patch_size", "0", "patch_size 0: expected an integer in 1..64"),
    ("zero-heads", "num_heads", "0", "num_heads 0: expected an integer in 1..256"),
    ("heads-not-dividing", "num_heads", "5", "embed_dim 192 is not a multiple of num_heads 5"),
    ("embed-dim-string", "embed_dim", '"192"', "embed_dim '192': expected an integer"),
    ("negative-depth", "depth", "-1", "depth -1: expected an integer in 1..1000"),
    ("bool-depth", "depth", "true", "depth True: expected an integer"),
    ("attn-shape", "outputs", '{"cls": ["B", 192], "attn": ["B", 7, 4, 6]}',
     "output attn has shape ['B', 7, 4, 6], the other fields say ['B', 3, 4, 6]"),
    ("outputs-list", "outputs", "[]", "outputs must be a map of name to shape, got list"),
    ("outputs-lack-attn", "outputs", '{"cls": ["B", 192]}', "outputs lack 'attn'"),
    ("unknown-output", "outputs", '{"cls": ["B", 192], "attn": ["B", 3, 4, 6], "x": [1]}',
     "unknown output 'x'"),
    ("batch-number", "batch", "8", "batch 8: expected a string like '1' or 'dynamic:1,4,8'"),
    ("batch-order", "batch", '"dynamic:4,1,2"', "1 <= MIN <= OPT <= MAX <= 4096"),
    ("batch-huge", "batch", '"999999"', "batch 999999: expected 1..4096"),
    ("input-format-list", "input_format", "[1]", "input_format [1]: expected one of"),
    ("input-format-unknown", "input_format", '"float_nhwc"', "unknown input format 'float_nhwc'"),
    ("input-name-mismatch", "input_name", '"images_bgr"',
     "input_name 'images_bgr' does not fit input_format 'float_nchw_rgb_normalized'"),
    ("precision", "precision", '"fp64"', "precision 'fp64': expected one of fp32, fp16"),
    ("family", "family", '"dinov4"', "family 'dinov4': expected one of dino, dinov2, dinov3"),
    ("weight-bits-of-a-float-file", "weight_bits", "7", "weight_bits 7: expected 0 for a fp32"),
    ("weight-bits-string", "weight_bits", '"0"', "weight_bits '0': expected 0 for a fp32 file"),
    ("registers", "num_registers", "1000", "num_registers 1000: expected an integer in 0..64"),
    ("arch-not-json", "arch", "{broken", "metadata dino.arch: not valid JSON"),
    ("deeply-nested", "mean", DEEP, "metadata dino.mean: not valid JSON"),
    ("huge-value", "arch", '"' + "x" * (2 << 20) + '"', "not a JSON value of at most 1048576 bytes"),
    ("arch-object", "arch", '{"a": 1}', "arch {'a': 1}: expected a string"),
    ("missing-patch-size", "patch_size", None, "not a dino-export model: metadata lacks "
                                              "dino.patch_size"),
]


def mutated_props(key: str, raw: str | None, base: ModelMetadata | None = None) -> dict[str, str]:
    props = (base or valid_metadata()).to_props()
    if raw is None:
        del props["dino." + key]
    else:
        props["dino." + key] = raw
    return props
