"""One adaptive training run for tests/test_distributed.py, in one process or as a torchrun rank.

    python tests/ddp_train.py SPEC_JSON OUT_DIR
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_train.py SPEC_JSON OUT_DIR

SPEC_JSON holds ``cfg`` (TaskConfig fields), ``data`` (prepared data folder), ``knobs`` (adaptive's),
``dropout`` (false: every dropout layer of the model is switched off) and optionally ``resume`` (the
resume state's path: each epoch's state is saved there, and a run that finds one continues it).
Each rank trains with ``OUT_DIR/rank<r>/{run,live}`` as its output folders (so the test sees which
rank wrote what) and leaves its LR trajectory, validation losses and log lines in ``OUT_DIR/rank<r>.json``.
"""

import json
import sys
from pathlib import Path

import torch

from adaptive_lr import distributed, schedules
from adaptive_lr.config import TaskConfig
from adaptive_lr.tasks import get_task
from adaptive_lr.train import train_one


def without_dropout(build):
    """``build`` (a task's build_model) with every dropout layer set to p = 0."""

    def build_model():
        model = build()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        return model

    return build_model


def main(spec: dict, out: Path) -> None:
    torch.set_num_threads(1)  # as torchrun sets OMP_NUM_THREADS=1: one and two processes use one thread each
    cfg = TaskConfig(**spec["cfg"])
    task = get_task(cfg.task, cfg)
    if not spec.get("dropout", True):
        task.build_model = without_dropout(task.build_model)
    rank = distributed.world_from_env().rank
    knobs = schedules.knobs_of("adaptive", spec["knobs"])
    lines: list[str] = []
    r = train_one(
        task,
        cfg,
        "adaptive",
        knobs,
        0,
        Path(spec["data"]),
        out / f"rank{rank}" / "run",
        out / f"rank{rank}" / "live",
        log=lines.append,  # rank 0's lines only: other ranks log nothing
        resume_path=Path(spec["resume"]) if spec.get("resume") else None,
    )
    record = {
        "lr_trace": r.lr_trace,
        "val_loss": r.val_loss,
        "probes": r.probes,
        "epochs_run": r.epochs_run,
        "log": lines,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    distributed.shutdown()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), Path(sys.argv[2]))
