"""The training order: `resume.BalancedShardSampler` (each epoch from the seed alone, the same
global batches for any number of processes, every process's share of a step balanced in tokens)
and `resume.train_sampler`, which picks it."""
from __future__ import annotations

import random

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard

from tableqa_helpers.train.resume import BalancedShardSampler, train_sampler


def _lengths(n=96, seed=0):
    rng = random.Random(seed)
    return [rng.randint(200, 3000) for _ in range(n)]


def _per_rank(sampler, world, batch_size):
    """What each process gets, through accelerate's own sharding (batch i -> process i % world)."""
    batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False)
    return [[i for b in BatchSamplerShard(batches, world, r) for i in b] for r in range(world)]


def test_each_epoch_a_seeded_permutation():
    lengths = _lengths()
    s = BalancedShardSampler(lengths, world=2, batch_size=1, grad_accum=12, seed=7)
    first = list(s)
    assert sorted(first) == list(range(len(lengths)))
    assert list(BalancedShardSampler(lengths, 2, 1, 12, seed=7)) == first  # from the seed alone
    s.set_epoch(1)
    assert list(s) != first and sorted(s) == list(range(len(lengths)))
    s.set_epoch(0)
    assert list(s) == first


@pytest.mark.parametrize("batch_size", [1, 2])
def test_same_global_batches_for_any_number_of_processes(batch_size):
    lengths = _lengths(100)
    per_step = 24
    windows = {}
    for world in (1, 2, 4):
        ga = per_step // (world * batch_size)  # 24 divides evenly for every case here
        order = list(BalancedShardSampler(lengths, world, batch_size, ga, seed=3))
        windows[world] = [sorted(order[i:i + per_step]) for i in range(0, len(order), per_step)]
    assert len(windows[1]) == 5  # 100 samples: 4 full steps of 24 and a last one of 4
    assert all(w == windows[1] for w in windows.values())


@pytest.mark.parametrize("world,batch_size,grad_accum", [(2, 1, 12), (4, 1, 6), (2, 2, 6)])
def test_processes_get_balanced_shares(world, batch_size, grad_accum):
    lengths = _lengths(480, seed=world)
    share = batch_size * grad_accum
    balanced = _per_rank(BalancedShardSampler(lengths, world, batch_size, grad_accum, seed=1),
                         world, batch_size)
    assert sorted(i for r in balanced for i in r) == list(range(len(lengths)))
    # the same windows dealt in the permutation's order, without balancing
    g = torch.Generator()
    g.manual_seed(1)
    plain = _per_rank(torch.randperm(len(lengths), generator=g).tolist(), world, batch_size)
    spread = {"balanced": [], "plain": []}
    for name, ranks in (("balanced", balanced), ("plain", plain)):
        for step in range(len(lengths) // (world * share)):
            loads = [sum(lengths[i] for i in r[step * share:(step + 1) * share]) for r in ranks]
            spread[name].append(max(loads) - min(loads))
    # greedy longest-first: the spread never exceeds one sample's length
    assert max(spread["balanced"]) <= max(lengths)
    assert sum(spread["balanced"]) < sum(spread["plain"]) / 5
    if batch_size > 1:  # a process's micro-batches hold samples of similar length
        for r in balanced:
            for k in range(0, len(r) - batch_size + 1, batch_size):
                mb = [lengths[i] for i in r[k:k + batch_size]]
                assert mb == sorted(mb, reverse=True)


def test_a_last_partial_window_keeps_every_sample():
    lengths = _lengths(30)
    order = list(BalancedShardSampler(lengths, world=2, batch_size=1, grad_accum=4, seed=0))
    assert sorted(order) == list(range(30))


def test_train_sampler_picks_balanced_only_with_lengths():
    from datasets import Dataset

    with_lengths = Dataset.from_dict({"x": list(range(8)), "length": list(range(8))})
    without = Dataset.from_dict({"x": list(range(8))})
    default = torch.utils.data.RandomSampler(without)
    assert isinstance(train_sampler(default, with_lengths, 2, 1, 4, 0), BalancedShardSampler)
    assert isinstance(train_sampler(default, with_lengths, 1, 1, 4, 0), BalancedShardSampler)
    assert train_sampler(default, with_lengths, 1, 4, 1, 0) is default  # 1 process, micro-batches
    assert train_sampler(default, without, 2, 1, 4, 0) is default
    with pytest.raises(ValueError, match="grad_accum"):
        BalancedShardSampler([1, 2], world=1, batch_size=1, grad_accum=0, seed=0)


def test_train_sampler_falls_back_on_gaps_and_streams():
    from datasets import Dataset

    gaps = Dataset.from_dict({"x": [1, 2, 3], "length": [5, None, 7]})
    default = torch.utils.data.RandomSampler(gaps)
    assert train_sampler(default, gaps, 2, 1, 4, 0) is default  # a user's column with gaps
    assert train_sampler(None, gaps, 2, 1, 4, 0) is None  # no sampler (a stream): left alone


def test_a_resumed_epoch_gets_its_epoch_before_the_loader_runs():
    """`resume.SamplerEpoch` sets the sampler's epoch from the restored ``state.epoch`` (a run
    resumed mid-epoch, whose sampler the Trainer's own `set_epoch` does not reach)."""
    from types import SimpleNamespace

    from tableqa_helpers.train.resume import SamplerEpoch

    sampler = BalancedShardSampler(_lengths(16), world=2, batch_size=1, grad_accum=2, seed=0)
    trainer = SimpleNamespace(order_sampler=sampler)
    callback = SamplerEpoch(trainer)
    for restored, epoch in ((0.0, 0), (1.5, 1), (0.9999999999, 1), (2.0, 2)):
        callback.on_epoch_begin(None, SimpleNamespace(epoch=restored), None)
        assert sampler.epoch == epoch
    trainer.order_sampler = None  # the Trainer's own sampler: nothing to do
    callback.on_epoch_begin(None, SimpleNamespace(epoch=1.0), None)
    assert sampler.epoch == 2  # the sampler it no longer holds is left alone
