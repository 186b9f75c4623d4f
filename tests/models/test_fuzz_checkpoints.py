"""Fuzzing checkpoint reading: 200 random mutations of a small valid checkpoint (bytes flipped,
truncated, keys renamed, shapes, dtypes and values changed, huge declared sizes, zip bombs,
wrappers) must each end in a one-line CheckpointError or a model that runs: never another
exception, a hang (each case is time-boxed) or a crash.

The seed is fixed (the cases are the same on every run); ``DINO_FUZZ_SEED=n`` explores others.
"""
from __future__ import annotations

import io
import math
import os
import random
import struct
import subprocess
import sys
import zipfile
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn

from dino_core.errors import CheckpointError
from dino_models import VisionTransformer
from dino_models.checkpoint import load_backbone
from tests.limits import judge

SEED = int(os.environ.get("DINO_FUZZ_SEED", "22"))
CASES = 200
CASE_SECONDS = 10.0
ROOT = Path(__file__).resolve().parents[2]
DTYPES = (torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.uint8,
          torch.bool, torch.complex64)


def small_vit() -> VisionTransformer:
    """32 wide, 1 block, 1 head, 32x32: a 60 kB checkpoint that load_backbone infers exactly."""
    torch.manual_seed(0)
    return VisionTransformer(img_size=[32], patch_size=16, embed_dim=32, depth=1, num_heads=1,
                             mlp_ratio=2.0, qkv_bias=True,
                             norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()


def saved(obj: Any, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


# -- structured mutations: a changed object, then torch.save ----------------------------------
def _tensor_key(rng, state) -> str:
    """A key holding a tensor of real (not stride-0) data, when there is one."""
    keys = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.numel() < 1 << 20]
    return rng.choice(keys or list(state))


def _rename(rng, state):
    key = rng.choice(list(state))
    name = str(key)
    new = rng.choice([name + "x", name.replace("blocks.0", "blocks.1"), "module." + name,
                      name.replace(".", "_"), "backbone." + name, ""])
    state[new] = state.pop(key)
    return f"rename {key} -> {new}"


def _delete(rng, state):
    key = rng.choice(list(state))
    del state[key]
    return f"delete {key}"


def _reshape(rng, state):
    key = _tensor_key(rng, state)
    shape = list(getattr(state[key], "shape", [2]))
    how = rng.choice(["grow", "shrink", "drop", "add", "zero"])
    if how == "grow" and shape:
        shape[rng.randrange(len(shape))] += rng.choice([1, 7, 100])
    elif how == "shrink" and shape:
        i = rng.randrange(len(shape))
        shape[i] = max(0, shape[i] - 1)
    elif how == "drop" and shape:
        shape.pop(rng.randrange(len(shape)))
    elif how == "zero" and shape:
        shape[rng.randrange(len(shape))] = 0
    else:
        shape.insert(rng.randrange(len(shape) + 1), rng.choice([1, 2, 3]))
    state[key] = torch.randn(shape) if all(shape) and math.prod(shape) < 1 << 20 else \
        torch.zeros(1).expand(*shape) if all(shape) else torch.zeros(shape)
    return f"reshape {key} to {shape}"


def _retype(rng, state):
    key, dtype = _tensor_key(rng, state), rng.choice(DTYPES)
    value = state[key]
    small = isinstance(value, torch.Tensor) and value.numel() < 1 << 20
    state[key] = value.to(dtype) if small else torch.ones(2).to(dtype)
    return f"{key} as {dtype}"


def _not_a_tensor(rng, state):
    key = rng.choice(list(state))
    state[key] = rng.choice([3, "x", None, [1, 2], {"a": 1}, 2.5, b"raw"])
    return f"{key} = {state[key]!r}"


def _non_finite(rng, state):
    key = _tensor_key(rng, state)
    value = state[key]
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or \
            not 0 < value.numel() < 1 << 20:
        state[key] = torch.ones(4)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = rng.choice([float("nan"), float("inf"), -float("inf")])
    return f"non-finite value in {key}"


def _huge_view(rng, state):
    """A view with stride 0: any shape in a few bytes (what a 'declared size' attack uses)."""
    key = rng.choice(["patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight",
                      "cls_token", rng.choice(list(state))])
    rank = len(getattr(state.get(key), "shape", (1, 1))) or 1
    shape = [rng.choice([1, 4096, 65536, 1 << 20]) for _ in range(rank)]
    while math.prod(shape) > 1 << 50:  # beyond that torch cannot even count them
        shape[shape.index(max(shape))] = 1
    state[key] = torch.zeros(1).expand(*shape)
    if rng.random() < 0.5:
        state[f"blocks.{rng.choice([99, 999, 100000])}.norm1.weight"] = torch.zeros(1).expand(8)
    return f"{key} as a stride-0 view of shape {shape}"


def _extra(rng, state):
    key = rng.choice(["blocks.0.attn.extra", "head.weight", "x", "blocks.7.mlp.fc1.weight",
                      "register_tokens", 7, ("a", 1)])
    state[key] = torch.randn(rng.choice([1, 3, 32]))
    return f"extra key {key!r}"


STATE_MUTATIONS: list[Callable] = [_rename, _delete, _reshape, _retype, _not_a_tensor,
                                   _non_finite, _huge_view, _extra]


def _wrap(rng, state) -> tuple[Any, str]:
    """The state inside one of the containers checkpoints come in (or a wrong one)."""
    how = rng.choice(["plain", "model", "state_dict", "training", "training-junk-teacher",
                      "toolkit-record", "list", "tensor", "empty", "nested"])
    if how == "plain":
        return state, "plain"
    if how in ("model", "state_dict"):
        return {how: state}, how
    if how == "training":
        teacher = {f"backbone.{k}" if isinstance(k, str) else k: v for k, v in state.items()}
        return {"teacher": teacher, "student": {f"module.{k}": v for k, v in teacher.items()
                                                if isinstance(k, str)}, "epoch": 3}, how
    if how == "training-junk-teacher":
        return {"teacher": rng.choice([{"backbone.x": 1}, {}, {"other.w": torch.zeros(1)}]),
                "student": state}, how
    if how == "toolkit-record":
        teacher = {f"backbone.{k}": v for k, v in state.items() if isinstance(k, str)}
        heads = rng.choice([0, -1, 1, 2, 3, 32, 64, "2", None, 2.0, True, [1], 1 << 40])
        return {"teacher": teacher, "student": teacher, "dino_edge": {"num_heads": heads}}, \
            f"toolkit record num_heads={heads!r}"
    if how == "list":
        return list(state.values()), how
    if how == "tensor":
        return torch.zeros(3), how
    if how == "empty":
        return {}, how
    return {"a": {"b": {"c": state}}}, how


# -- byte mutations of a saved file ------------------------------------------------------------
def _flip(rng, data: bytes) -> tuple[bytes, str]:
    buf = bytearray(data)
    count = rng.choice([1, 2, 4, 16])
    for _ in range(count):
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    return bytes(buf), f"{count} bits flipped"


def _truncate(rng, data):
    n = rng.randrange(len(data))
    return data[:n], f"truncated to {n} bytes"


def _append(rng, data):
    return data + rng.randbytes(rng.choice([1, 100, 5000])), "garbage appended"


def _zero_range(rng, data):
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.choice([4, 64, 4096]))
    return data[:start] + bytes(end - start) + data[end:], f"bytes {start}:{end} zeroed"


def _declare_huge(rng, data):
    """Central-directory records declaring huge uncompressed sizes."""
    buf = bytearray(data)
    starts = [i for i in range(len(buf) - 4) if buf[i:i + 4] == b"PK\x01\x02"]
    if not starts:
        return _flip(rng, data)
    for start in rng.sample(starts, rng.randint(1, len(starts))):
        struct.pack_into("<I", buf, start + 24, rng.choice([0xFFFFFFF0, 1 << 30, 12 << 28]))
    return bytes(buf), "records declare huge sizes"


BYTE_MUTATIONS = [_flip, _truncate, _append, _zero_range, _declare_huge]


def zip_bomb(megabytes: int = 16) -> bytes:
    """A torch.save zip whose one tensor of zeros is deflated about 1000x."""
    honest = saved({"cls_token": torch.zeros(megabytes << 18)})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(honest)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return out.getvalue()


def make_case(rng: random.Random, base: dict) -> tuple[str, bytes, str]:
    """(description, file bytes, suffix) of one mutated checkpoint."""
    kind = rng.random()
    if kind < 0.03:
        return "zip bomb", zip_bomb(), ".pth"
    state = dict(base)
    steps = [m(rng, state) for m in rng.sample(STATE_MUTATIONS, rng.choice([0, 1, 1, 2]))]
    obj, wrapper = _wrap(rng, state)
    legacy = rng.random() < 0.2
    if kind < 0.13 and wrapper == "plain" and all(isinstance(k, str) for k in state):
        from safetensors.torch import save as save_safetensors
        try:
            data, suffix = save_safetensors({k: v.contiguous() for k, v in state.items()
                                             if isinstance(v, torch.Tensor)}), ".safetensors"
        except Exception:  # noqa: BLE001 - a state safetensors cannot hold: save it as .pth
            data, suffix = saved(obj, legacy), ".pth"
    else:
        data, suffix = saved(obj, legacy), ".pth"
    if rng.random() < 0.45:
        data, how = rng.choice(BYTE_MUTATIONS)(rng, data)
        steps.append(how)
    return f"{wrapper}{' legacy' if legacy else ''}: {'; '.join(steps) or 'unchanged'}", data, \
        suffix


def check_one(path: Path) -> tuple[str, str | None]:
    """(outcome, problem): "refused" with a one-line CheckpointError or "ok" with a model that
    runs, and None; or "failed" and what went wrong."""
    def load_and_run():
        model, info = load_backbone(path)
        side = 2 * info.patch_size  # small: the runtime picks its own size (the memory check
        with torch.no_grad():       # before a run is tested in tests/runtime)
            model(torch.zeros(1, 3, side, side))

    outcome, _, problem = judge(load_and_run, CheckpointError, CASE_SECONDS, f"loading {path}")
    return outcome, problem


@pytest.fixture(scope="module")
def fuzz_cases() -> list[tuple[str, bytes, str]]:
    rng = random.Random(SEED)
    base = small_vit().state_dict()
    return [make_case(rng, base) for _ in range(CASES)]


def test_the_unmutated_small_checkpoint_loads_exactly(tmp_path):
    path = tmp_path / "small.pth"
    path.write_bytes(saved(small_vit().state_dict()))
    model, info = load_backbone(path)
    assert (info.embed_dim, info.depth, info.num_heads, info.img_size) == (32, 1, 1, 32)
    ref = small_vit().state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_200_mutated_checkpoints_each_end_in_one_line_or_a_model(fuzz_cases, tmp_path):
    failures, outcomes = [], {"refused": 0, "ok": 0, "failed": 0}
    for i, (what, data, suffix) in enumerate(fuzz_cases):
        path = tmp_path / f"case{i:03d}{suffix}"
        path.write_bytes(data)
        outcome, problem = check_one(path)
        outcomes[outcome] += 1
        if problem:
            failures.append(f"case {i} ({what}): {problem}")
        path.unlink()
    assert not failures, f"seed {SEED}, {outcomes}:\n" + "\n".join(failures)
    # both ends are reached: the mutations are neither all harmless nor all fatal
    assert outcomes["refused"] > 50 and outcomes["ok"] > 10, outcomes


@pytest.mark.parametrize("prog, mutation", [("dino-export", "truncated"),
                                             ("dino-run", "bits flipped")])
def test_mutated_checkpoints_through_the_commands_are_one_line(fuzz_cases, tmp_path, prog,
                                                               mutation):
    """The first case of a kind through the real console script (a subprocess)."""
    import cv2
    import numpy as np
    what, data, _ = next(c for c in fuzz_cases if c[2] == ".pth" and mutation in c[0])
    path = tmp_path / "c.pth"
    path.write_bytes(data)
    if prog == "dino-export":
        args = ["dino_export.cli", str(path), "-o", str(tmp_path / "m.onnx"), "--img-size", "32",
                "32"]
    else:
        cv2.imwrite(str(tmp_path / "f.png"), np.zeros((32, 32, 3), np.uint8))
        args = ["dino_runtime.cli", "--model", str(path), "--source", str(tmp_path / "f.png"),
                "--input-size", "32x32", "--no-display"]
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode in (0, 1), f"{what}: exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, f"{what}: {proc.stderr[-2000:]}"
    if proc.returncode:
        assert proc.stderr.strip().splitlines()[-1].startswith(f"{prog}: "), proc.stderr
