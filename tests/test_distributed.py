import pytest

from deeplabv3plus.distributed import ShardSampler, get_world_size, init_distributed_mode, is_main_process


@pytest.mark.parametrize("length,world_size", [(12, 2), (7, 3), (2, 4)])
def test_shards_cover_every_index_once_without_padding(length, world_size):
    shards = [list(ShardSampler(length, rank, world_size)) for rank in range(world_size)]
    assert sorted(index for shard in shards for index in shard) == list(range(length))
    assert [len(ShardSampler(length, rank, world_size)) for rank in range(world_size)] == [len(s) for s in shards]


def test_without_torchrun_the_process_runs_alone(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = init_distributed_mode("cpu")
    assert not context.enabled and context.is_main and context.world_size == 1
    assert is_main_process() and get_world_size() == 1
