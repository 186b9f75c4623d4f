"""Training-step throughput: the official DINO step (fp32, eager) vs dino-train's fastest CPU path.

    flock /tmp/heavy.lock python benchmarks/bench_train.py --official-repo /path/to/dino \
        --data /path/to/imagenette/val

One run measures, on the same machine and the same batches (ViT-Tiny/16, 2x224 + 8x96 crops,
batch 16, out_dim 65536, stochastic depth off so that both compute the same function):

* baseline: the official code itself when ``--official-repo`` is given (its ``vit_tiny``,
  ``DINOHead``, ``MultiCropWrapper``, ``DINOLoss``, ``clip_gradients``,
  ``cancel_gradients_last_layer``, ``torch.optim.AdamW`` and the per-parameter EMA loop of
  ``train_one_epoch``), fp32 eager; otherwise an in-repo stand-in written the same way
  (unfused attention, pairwise loss loop, per-parameter EMA);
* ours, step for step after the baseline (interleaved, so a shared CPU's load hits both):
  ``dino_train.step.train_step`` (bf16 autocast, batched-product attention on CPU, fused
  AdamW, fused clipping and EMA, optionally ``torch.compile``).

Both start from the same weights and get the same batches, made before timing starts, so the
speed-up compares training steps. Data loading is measured on its own afterwards: the CPU time
that making one batch costs (what the loader's worker takes from the training threads), the
share of a step spent waiting for the real ``DataLoader`` (1 worker), and our images/s when fed
by it. The losses of the first steps are compared.

On a GPU (``--device cuda``) both run there, each timed step ends with a device sync, and the
official loss's centre all-reduce goes through NCCL.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dino_core.errors import UserError
from dino_train import distributed as D
from dino_train.batched_augment import BatchedMultiCrop, SourceImage, collate_sources
from dino_train.builders import build_trainer
from dino_train.config import TrainConfig
from dino_train.context import TrainContext
from dino_train.cpu_tuning import cpu_model, keep_freed_memory
from dino_train.data import MultiCropAugmentation, MultiCropDataset, scan_folder
from dino_train.step import make_views, train_step


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official-repo", default=None, help="facebookresearch/dino checkout")
    p.add_argument("--data", default=None, help="image folder (default: synthetic images)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile, caches)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out-dim", type=int, default=65536)
    p.add_argument("--depth", type=int, default=None, help="fewer blocks, for a quick check")
    p.add_argument("--local-crops", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="torch.compile our backbones")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--augmentation", default="pil", choices=["pil", "batched"],
                   help="how the loader part makes its views (the timed comparison always "
                        "feeds both steps the same PIL views)")
    return p.parse_args()


def synthetic_images(n: int) -> Path:
    from PIL import Image
    folder = Path(tempfile.mkdtemp(prefix="bench_train_"))
    rs = np.random.RandomState(0)
    for i in range(n):
        Image.fromarray(rs.randint(0, 256, (256, 320, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return folder


def make_config(args: argparse.Namespace, data: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        arch="vit_tiny", patch_size=16, out_dim=args.out_dim, batch_size_per_gpu=args.batch,
        local_crops_number=args.local_crops, drop_path_rate=0.0, data_path=str(data),
        output_dir=str(out), num_workers=args.num_workers, device=args.device,
        precision=args.precision, compile=args.compile, depth=args.depth, progress=False,
        epochs=100, warmup_epochs=10, augmentation=args.augmentation)


def fixed_batches(cfg: TrainConfig, n: int) -> list[list[torch.Tensor]]:
    """The first ``n`` batches the real loader will yield (views are seeded per sample)."""
    ds = MultiCropDataset(scan_folder(cfg.data_path).samples, MultiCropAugmentation(cfg.crops()),
                          cfg.seed)
    from dino_train.data import EpochSampler
    sampler = EpochSampler(ds, 1, 0, cfg.seed, cfg.batch_size_per_gpu)
    sampler.set_epoch(0)
    keys = list(sampler)[: n * cfg.batch_size_per_gpu]
    batches = []
    for b in range(n):
        items = [ds[k][0] for k in keys[b * cfg.batch_size_per_gpu:(b + 1) * cfg.batch_size_per_gpu]]
        batches.append([torch.stack(c) for c in zip(*items)])
    return batches


# -- baseline -----------------------------------------------------------------------------------
class OfficialStep:
    """The official ``train_one_epoch`` body (single process, fp32, no autocast)."""

    def __init__(self, repo: str, cfg: TrainConfig, state: dict, schedules) -> None:
        sys.path.insert(0, repo)
        import torch.distributed as dist
        if not dist.is_initialized():  # official DINOLoss all-reduces the centre
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29541")
            dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo", rank=0,
                                    world_size=1)
        import main_dino
        import utils
        import vision_transformer as vits
        self.utils = utils
        from functools import partial

        def vit_tiny():  # the official vit_tiny, with an optional smaller depth
            return vits.VisionTransformer(
                patch_size=16, embed_dim=192, depth=cfg.depth or 12, num_heads=3, mlp_ratio=4,
                qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                drop_path_rate=0.0)
        student, teacher = vit_tiny(), vit_tiny()
        self.student = utils.MultiCropWrapper(student, vits.DINOHead(192, cfg.out_dim))
        self.teacher = utils.MultiCropWrapper(teacher, vits.DINOHead(192, cfg.out_dim))
        self.student.load_state_dict(state)
        self.teacher.load_state_dict(state)
        self.device = torch.device(cfg.device)
        self.student.to(self.device)
        self.teacher.to(self.device)
        for p in self.teacher.parameters():
            p.requires_grad = False
        self.loss = main_dino.DINOLoss(cfg.out_dim, cfg.local_crops_number + 2, 0.04, 0.04, 0,
                                       cfg.epochs).to(self.device)
        self.optimizer = torch.optim.AdamW(utils.get_params_groups(self.student))
        self.schedules, self.cfg = schedules, cfg

    def __call__(self, images: list[torch.Tensor], it: int) -> float:
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.schedules.lr[it]
            if i == 0:
                group["weight_decay"] = self.schedules.weight_decay[it]
        images = [im.to(self.device, non_blocking=True) for im in images]
        teacher_output = self.teacher(images[:2])
        student_output = self.student(images)
        loss = self.loss(student_output, teacher_output, 0)
        value = loss.item()
        self.optimizer.zero_grad()
        loss.backward()
        self.utils.clip_gradients(self.student, self.cfg.clip_grad)
        self.utils.cancel_gradients_last_layer(0, self.student, self.cfg.freeze_last_layer)
        self.optimizer.step()
        with torch.no_grad():
            m = self.schedules.momentum[it]
            for param_q, param_k in zip(self.student.parameters(), self.teacher.parameters()):
                param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)
        return value


class StandInStep(OfficialStep):
    """Without the official repository: our modules run the official way (unfused attention,
    the pairwise loss loop, per-parameter clipping loop and EMA, for-loop AdamW)."""

    def __init__(self, cfg: TrainConfig, state: dict, schedules) -> None:
        from dino_models import DINOHead
        from dino_models.archs import resolve_arch
        from dino_train.multicrop import MultiCropWrapper
        kw = {"depth": cfg.depth} if cfg.depth else {}

        def net():
            m = MultiCropWrapper(resolve_arch("vit_tiny", 16).build(**kw), DINOHead(192, cfg.out_dim))
            for blk in m.backbone.blocks:
                blk.attn.fused_attn = False
            m.load_state_dict(state)
            return m.to(self.device)
        self.device = torch.device(cfg.device)
        self.student, self.teacher = net(), net()
        for p in self.teacher.parameters():
            p.requires_grad = False
        self.loss = _PairwiseLoss(cfg.local_crops_number + 2)
        groups = [{"params": [p for n, p in self.student.named_parameters() if p.requires_grad
                              and not (n.endswith(".bias") or p.ndim == 1)]},
                  {"params": [p for n, p in self.student.named_parameters() if p.requires_grad
                              and (n.endswith(".bias") or p.ndim == 1)], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, foreach=False)
        self.utils = _LoopUtils()
        self.schedules, self.cfg = schedules, cfg


class _PairwiseLoss:
    def __init__(self, ncrops: int) -> None:
        self.ncrops, self.center = ncrops, None

    def __call__(self, s, t, epoch):
        import torch.nn.functional as F
        self.center = torch.zeros(1, t.shape[1], device=t.device) if self.center is None \
            else self.center
        s = (s / 0.1).chunk(self.ncrops)
        q = F.softmax((t - self.center) / 0.04, dim=-1).detach().chunk(2)
        total, n = 0, 0
        for iq, qi in enumerate(q):
            for v in range(len(s)):
                if v != iq:
                    total += torch.sum(-qi * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                    n += 1
        with torch.no_grad():
            self.center = self.center * 0.9 + t.sum(0, keepdim=True) / len(t) * 0.1
        return total / n


class _LoopUtils:
    @staticmethod
    def clip_gradients(model, clip):
        for p in model.parameters():
            if p.grad is not None:
                norm = p.grad.data.norm(2)
                coef = clip / (norm + 1e-6)
                if coef < 1:
                    p.grad.data.mul_(coef)

    @staticmethod
    def cancel_gradients_last_layer(epoch, model, freeze):
        if epoch < freeze:
            for n, p in model.named_parameters():
                if "last_layer" in n:
                    p.grad = None


# -- measurement --------------------------------------------------------------------------------
def interleaved(baseline, trainer, batches, warmup: int) -> dict[str, list[float]]:
    """Baseline step i, then our step i, alternately: on a shared CPU, both see the same load.
    On a GPU each step ends with a device sync, so that no queued work is timed in the next."""
    r: dict[str, list[float]] = {"base_loss": [], "our_loss": [], "base_t": [], "our_t": []}
    sync = torch.cuda.synchronize if trainer.ctx.device.type == "cuda" else (lambda: None)
    for i, images in enumerate(batches):
        sync()
        t0 = time.perf_counter()
        r["base_loss"].append(baseline(images, i))
        sync()
        t1 = time.perf_counter()
        r["our_loss"].append(train_step(trainer, images))
        trainer.state.step += 1
        sync()
        t2 = time.perf_counter()
        if i >= warmup:
            r["base_t"].append(t1 - t0)
            r["our_t"].append(t2 - t1)
    return r


def batch_cpu_seconds(cfg: TrainConfig, n: int = 2) -> float:
    """CPU seconds that decoding and augmenting one batch costs on one thread (as in a worker;
    with ``--augmentation batched``: decoding in the worker, plus the views when on the CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.process_time()
        if cfg.augmentation == "batched":
            src = MultiCropDataset(scan_folder(cfg.data_path).samples,
                                   SourceImage(2 * cfg.global_crop_size), cfg.seed)
            views = BatchedMultiCrop(cfg.crops())
            for b in range(n):
                keys = range(b * cfg.batch_size_per_gpu, (b + 1) * cfg.batch_size_per_gpu)
                (images, sizes), _ = collate_sources([src[(0, k)] for k in keys])
                if cfg.device == "cpu":  # on a GPU the views are made there, not by a CPU
                    views(images, sizes, torch.Generator().manual_seed(b))
        else:
            fixed_batches(cfg, n)
        return (time.process_time() - t0) / n
    finally:
        torch.set_num_threads(threads)


def from_loader(trainer, steps: int) -> dict[str, float]:
    """Consecutive steps fed by the real DataLoader (next epoch, so new crops): the share of the
    time spent waiting for batches, and the step time."""
    trainer.sampler.set_epoch(1)
    waits, total, n = 0.0, 0.0, 0
    last = time.perf_counter()
    for i, (batch, _) in enumerate(trainer.loader):
        crops = make_views(trainer, batch)  # batched views: made here, counted as waiting
        wait = time.perf_counter() - last
        train_step(trainer, crops)
        trainer.state.step += 1
        now = time.perf_counter()
        if i > 0:  # the first batch includes starting the worker process
            waits, total, n = waits + wait, total + (now - last), n + 1
        last = now
        if i == steps:
            break
    return {"wait_share": waits / total, "step_s": total / n}


def main() -> None:
    args = parse_args()
    if args.device == "cpu":
        keep_freed_memory()  # as dino-train does; in-process, so the baseline gets it too
    torch.manual_seed(0)
    n = args.warmup + args.steps
    # the timed steps need n distinct batches, and the loader part 5 more from a second epoch
    data = Path(args.data) if args.data else synthetic_images(max(n, 5) * args.batch)
    out = Path(tempfile.mkdtemp(prefix="bench_train_out_"))
    cfg = make_config(args, data, out)
    available = len(scan_folder(cfg.data_path).samples) // args.batch
    if available < max(n, 5):
        sys.exit(f"bench_train: {cfg.data_path} holds {available} full batches of {args.batch}; "
                 f"--warmup + --steps need {max(n, 5)}")
    ctx = TrainContext(torch.device(args.device), args.precision, D.DistInfo(device=args.device))
    trainer = build_trainer(cfg, ctx)
    state = trainer.nets.student_module.state_dict()
    batches = fixed_batches(cfg, n)
    if args.official_repo:
        baseline, name = OfficialStep(args.official_repo, cfg, state, trainer.schedules), \
            f"official code ({args.official_repo}), fp32 eager"
    else:
        baseline, name = StandInStep(cfg, state, trainer.schedules), \
            "official-style stand-in (no --official-repo), fp32 eager"
    r = interleaved(baseline, trainer, batches, args.warmup)
    del baseline
    data = from_loader(trainer, 4)
    data["batch_cpu_s"] = batch_cpu_seconds(cfg)
    report(args, name, r, data)


def report(args, name, r: dict[str, list[float]], data: dict[str, float]) -> None:
    base_losses, base_times, our_losses, our_times = \
        r["base_loss"], r["base_t"], r["our_loss"], r["our_t"]
    b_ips = args.batch / np.median(base_times)
    o_ips = args.batch / np.median(our_times)
    cpu = cpu_model()
    depth = args.depth or 12
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}  machine: {cpu}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model: vit_tiny/16 depth {depth}, crops 2x224 + {args.local_crops}x96, batch "
          f"{args.batch}, out_dim {args.out_dim}, drop_path 0; {args.warmup} warm-up + "
          f"{args.steps} timed steps each")
    print(f"baseline: {name}")
    print(f"  {b_ips:7.2f} images/s  (median {np.median(base_times):.2f} s/step, min "
          f"{np.min(base_times):.2f}, steps {' '.join(f'{t:.2f}' for t in base_times)})")
    attention = "batched-product" if args.device == "cpu" and args.precision == "bf16" else "fused"
    ours = f"dino-train {args.precision}, {attention} attention, fused AdamW/clip/EMA" + \
        (", torch.compile" if args.compile else ", eager")
    print(f"ours: {ours}, same batches")
    print(f"  {o_ips:7.2f} images/s  (median {np.median(our_times):.2f} s/step, min "
          f"{np.min(our_times):.2f}, steps {' '.join(f'{t:.2f}' for t in our_times)})")
    print(f"speed-up: {o_ips / b_ips:.2f}x (medians), {np.min(base_times) / np.min(our_times):.2f}x "
          f"(fastest steps); steps interleaved baseline/ours, load average {os.getloadavg()[0]:.2f}")
    cores = os.cpu_count() or 1
    our_step = float(np.median(our_times))
    print(f"data loading ({args.augmentation} views): one batch costs {data['batch_cpu_s']:.2f} "
          f"CPU s (decode + augment, 1 thread) = {100 * data['batch_cpu_s'] / (cores * our_step):.1f}% of the CPU time of "
          f"one of our steps ({cores} cores x {our_step:.2f} s)")
    print(f"  fed by the real DataLoader ({args.num_workers} worker, 4 consecutive steps): "
          f"{args.batch / data['step_s']:.2f} images/s ({data['step_s']:.2f} s/step), "
          f"{100 * data['wait_share']:.1f}% of the time waiting for a batch")
    # those few steps can be served by batches the workers made together at the start; over a
    # long run they cannot make more than this (each worker builds whole batches, one at a time)
    ceiling = max(args.num_workers, 1) * args.batch / data["batch_cpu_s"]
    print(f"  steady state: {max(args.num_workers, 1)} worker(s) make at most {ceiling:.0f} "
          f"images/s; ours at {o_ips:.0f} images/s needs at least "
          f"{int(np.ceil(o_ips * data['batch_cpu_s'] / args.batch))} worker(s) on free cores")
    rel = [abs(a - b) / abs(b) for a, b in zip(our_losses, base_losses)]
    print("loss per step (baseline / ours / rel. diff):")
    for i, (a, b, r) in enumerate(zip(base_losses, our_losses, rel)):
        print(f"  step {i}: {a:.5f} / {b:.5f} / {r:.1e}")
    print(f"max relative loss difference: {max(rel):.1e}")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # a wrong --data or --official-repo: one line, not a traceback
        sys.exit(f"bench_train: {e}")
