"""``dino-train`` with every ``torch.distributed`` collective recording what it is handed.

Run by ``torchrun`` in :mod:`tests.train.test_ddp`: each process writes
``$COLLECTIVES_OUT/rank<N>.json``, one record per call: the collective, the devices of its
tensors, and the ``dino_train`` functions on the stack (``module.function``, innermost first).
NCCL rejects CPU tensors, so on GPUs a tensor off the run's device stops the run; on CPU (gloo)
the records show it instead.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce",
               "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single",
               "gather", "scatter", "send", "recv", "isend", "irecv")
RECORDS: list[dict] = []


def _tensors(values) -> list[torch.Tensor]:
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(_tensors(v))
    return out


def _callers() -> list[str]:
    frame, names = sys._getframe(2), []
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.parent.name == "dino_train":
            names.append(f"{path.stem}.{frame.f_code.co_name}")
        frame = frame.f_back
    return names


def _recording(name: str, collective):
    def recorded(*args, **kwargs):
        devices = [str(t.device) for t in _tensors([*args, *kwargs.values()])]
        RECORDS.append({"op": name, "devices": devices, "callers": _callers()})
        return collective(*args, **kwargs)
    return recorded


def install() -> None:
    """Replace each collective in both namespaces (torch calls its own through c10d's)."""
    for name in COLLECTIVES:
        collective = getattr(c10d, name, None)
        if collective is not None:
            recorded = _recording(name, collective)
            setattr(c10d, name, recorded)
            setattr(dist, name, recorded)


def main() -> None:
    install()
    from dino_train.cli import main as train_main
    try:
        train_main(sys.argv[1:])
    finally:
        out = Path(os.environ["COLLECTIVES_OUT"]) / f"rank{os.environ.get('RANK', '0')}.json"
        out.write_text(json.dumps(RECORDS))


if __name__ == "__main__":
    main()
