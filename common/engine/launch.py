"""Process launch for training and evaluation: CPU (gloo) or GPUs (NCCL), one or many machines,
or under ``torchrun``.

detectron2 v0.6's ``launch`` asserts CUDA and hard-codes NCCL; this one picks the backend from
the hardware, so ``--num-gpus N`` on a CPU machine runs N gloo worker processes.
"""

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

__all__ = ["launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)
logger = logging.getLogger(__name__)


def _backend():
    return "nccl" if torch.cuda.is_available() else "gloo"


def _set_local_group(world_size, procs_per_machine, machine_rank):
    """detectron2's ``comm.get_local_rank()`` needs the group of this machine's processes."""
    for i in range(world_size // procs_per_machine):
        ranks = list(range(i * procs_per_machine, (i + 1) * procs_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _bind_device(local_rank, procs_per_machine):
    if torch.cuda.is_available():
        if procs_per_machine > torch.cuda.device_count():
            raise SystemExit(
                f"error: {procs_per_machine} processes per machine but only "
                f"{torch.cuda.device_count()} GPUs"
            )
        torch.cuda.set_device(local_rank)
    else:
        # Share the cores instead of every process using all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs_per_machine))


def _worker(local_rank, main_func, world_size, procs_per_machine, machine_rank, dist_url, args,
            timeout):
    rank = machine_rank * procs_per_machine + local_rank
    _bind_device(local_rank, procs_per_machine)
    dist.init_process_group(
        backend=_backend(), init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
    )
    _set_local_group(world_size, procs_per_machine, machine_rank)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def launch(main_func, num_gpus_per_machine=1, num_machines=1, machine_rank=0, dist_url=None,
           args=(), timeout=DEFAULT_TIMEOUT):
    """Runs ``main_func(*args)`` in ``num_machines * num_gpus_per_machine`` processes.

    On a machine without CUDA, ``num_gpus_per_machine`` is the number of CPU worker processes.
    When started by ``torchrun`` (``LOCAL_RANK`` etc. in the environment), the process group
    is taken from the environment and the other arguments are ignored.
    """
    if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ:
        local_rank = int(os.environ["LOCAL_RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        _bind_device(local_rank, per_machine)
        dist.init_process_group(backend=_backend(), init_method="env://", timeout=timeout)
        _set_local_group(world_size, per_machine, int(os.environ.get("GROUP_RANK", 0)))
        comm.synchronize()
        try:
            return main_func(*args)
        finally:
            dist.destroy_process_group()

    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise SystemExit("error: --dist-url auto only works on one machine")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// dist-url across machines needs a shared file system")
    mp.start_processes(
        _worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
    )
