"""Scoring loops split over the processes of a distributed run (DDP, FSDP, DeepSpeed), results put back together.

A dev or test split is scored in batches. With P processes, process p takes batches p, p + P, p + 2P, ... and
writes its rows into a zero tensor of the whole split; a sum over processes (``all_reduce``) then gives every
process the full result, so P processes do 1/P of the work each and agree on the metrics.

Every process runs the same number of forward passes: FSDP and ZeRO-3 gather parameters inside each forward, so a
process that stopped one batch early would leave the others waiting. A process with fewer batches runs a repeat of
batch 0 and drops its output. Without a process group (one process) this is the plain loop.
"""

from __future__ import annotations

import torch


def process_group() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def my_batches(n_batches: int) -> list[int | None]:
    """This process's batch indices, padded with ``None`` (run batch 0, drop the output) to the common count."""
    rank, size = process_group()
    mine: list[int | None] = list(range(rank, n_batches, size))
    rounds = -(-n_batches // size)
    return mine + [None] * (rounds - len(mine))


def sum_over_processes(rows: torch.Tensor, device) -> torch.Tensor:
    """The element-wise sum of ``rows`` over processes (each filled its own rows, zeros elsewhere)."""
    if process_group()[1] == 1:
        return rows
    total = rows.to(device)  # NCCL reduces GPU tensors only; gloo takes either
    torch.distributed.all_reduce(total)
    return total.to(rows.device)
