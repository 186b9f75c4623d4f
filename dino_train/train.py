"""DINO pretraining from Python: ``train(TrainConfig(arch="vit_s8", data_path=...))``.

The training room, one idea per module, in the order a run uses them:

* :mod:`.config`: :class:`TrainConfig`, every option once (default, help, valid range);
* :mod:`.context`: device, precision and process group (:class:`TrainContext`);
* :mod:`.builders`: networks, losses, optimiser, schedules and data (:class:`Trainer`);
* :mod:`.step`: one optimisation step (:func:`train_step`);
* :mod:`.checkpointing`: checkpoints written and resumed from;
* :mod:`.outputs`: the output folder, its lock and ``config.json``;
* :mod:`.progress` and :mod:`.budget`: the bar, ``log.jsonl``, k-NN monitoring, the time budget;
* :mod:`.loop`: :func:`train`, epochs until the run ends.
"""
from .config import TrainConfig
from .loop import TrainSummary, train

__all__ = ["TrainConfig", "TrainSummary", "train"]
