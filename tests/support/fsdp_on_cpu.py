"""``ofa train`` under FSDP on CPU, for tests: ``accelerate launch --config_file FSDP.yaml fsdp_on_cpu.py --cpu ...``.

accelerate 1.16 does not run FSDP on a CPU: a ``--cpu`` run with several processes is ``MULTI_CPU``, and
``AcceleratorState`` turns only the accelerator kinds (``MULTI_GPU``, ``MULTI_XPU``...) into ``FSDP``, so
``ACCELERATE_USE_FSDP`` is silently ignored and the model is wrapped in DDP. torch's FSDP itself runs on CPU
with gloo. This wrapper lifts that one gate after the ``Accelerator`` is built: the distributed type becomes
FSDP, with the plugin the launcher configured from the YAML (``FSDP_*`` variables), on the plain ``cpu``
device (accelerate's ``cpu:RANK`` is refused by FSDP's device check). Everything after it, from
``accelerator.prepare`` to the checkpoints, is the production code.
"""
from __future__ import annotations

import os
import sys

import torch
from accelerate import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

import ofa.pipeline.trainer as trainer
from ofa.pipeline.train import main

_make_accelerator = trainer.make_accelerator


def make_fsdp_accelerator(cfg: trainer.TrainConfig):
    accelerator = _make_accelerator(cfg)
    if accelerator.distributed_type != DistributedType.MULTI_CPU or os.environ.get("ACCELERATE_USE_FSDP") != "true":
        raise RuntimeError(f"expected a multi-process CPU run launched with an FSDP config, got "
                           f"{accelerator.distributed_type} (ACCELERATE_USE_FSDP={os.environ.get('ACCELERATE_USE_FSDP')})")
    state = accelerator.state
    state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables accelerate launch set
    state.distributed_type = DistributedType.FSDP
    state.device = torch.device("cpu")
    PartialState._shared_state.update(distributed_type=DistributedType.FSDP, device=torch.device("cpu"))
    return accelerator


if __name__ == "__main__":
    trainer.make_accelerator = make_fsdp_accelerator
    sys.exit(main())
