"""The runtime seam: what the launcher environment means, and how the sampler shards the global order."""

from __future__ import annotations

import pytest
import torch

from waypoint.data.sampler import EpochBatchSampler
from waypoint.training.runtime import LaunchEnv, LaunchError, Runtime, rank_seed


def test_torchrun_variables_give_rank_world_size_and_local_rank() -> None:
    env = LaunchEnv.from_env(
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    )
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (3, 4, 1, "torchrun")
    assert (env.master_addr, env.master_port) == ("10.0.0.1", "29500")


def test_srun_without_torchrun_is_read_from_slurm_variables() -> None:
    env = LaunchEnv.from_env({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "42"})
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (1, 2, 1, "slurm")
    assert env.master_port == str(20000 + 42)


def test_a_single_slurm_task_and_no_launcher_are_one_process() -> None:
    assert LaunchEnv.from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).world_size == 1
    assert LaunchEnv.from_env({}) == LaunchEnv()


def test_one_process_has_no_process_group_and_its_collectives_are_local() -> None:
    rt = Runtime.start("single", torch.device("cpu"), env={})
    assert (rt.rank, rt.world_size, rt.is_coordinator, rt.distributed) == (0, 1, True, False)
    assert rt.any(True) and not rt.any(False)
    assert rt.all_sum([1.0, 2.0]) == [1.0, 2.0]
    assert rt.gather_object({"a": 1}) == [{"a": 1}]
    module = torch.nn.Linear(2, 2)
    assert rt.wrap(module) is module
    rt.barrier()


def test_ddp_without_a_launcher_names_the_torchrun_command() -> None:
    with pytest.raises(LaunchError, match=r"`torchrun --nproc_per_node=N train.py ... hardware=ddp`"):
        Runtime.start("ddp", torch.device("cpu"), env={})


def test_a_single_process_config_under_torchrun_is_refused() -> None:
    with pytest.raises(LaunchError, match="pass hardware=ddp or hardware=fsdp"):
        Runtime.start("single", torch.device("cpu"), env={"RANK": "0", "WORLD_SIZE": "2"})


def test_rank_zero_keeps_the_run_seed_and_other_ranks_get_their_own() -> None:
    assert rank_seed(7, 0) == 7
    assert len({rank_seed(7, r) for r in range(4)}) == 4
    assert rank_seed(7, 1) == rank_seed(7, 1)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_the_ranks_slices_make_up_each_global_batch_exactly(world: int) -> None:
    whole = list(EpochBatchSampler(40, 8, seed=3, epoch=2, start_batch=1))
    shards = [list(EpochBatchSampler(40, 8, seed=3, epoch=2, start_batch=1, rank=r, world_size=world)) for r in range(world)]
    for b, batch in enumerate(whole):
        assert [item for shard in shards for item in shard[b]] == batch


def test_a_global_batch_that_does_not_split_evenly_is_refused() -> None:
    with pytest.raises(ValueError, match="divisible by the world size 3"):
        EpochBatchSampler(40, 8, seed=0, epoch=0, world_size=3)
