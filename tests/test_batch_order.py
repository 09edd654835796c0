"""The trainer puts a step's trajectories in dataloader order before verl balances them over ranks (the replay
buffer yields them in the order rollouts finished, which varies between runs with several replicas)."""

from __future__ import annotations

import random

from verl_ext.trainer.self_distill import dataloader_order


def test_keys_sorted_by_dataloader_position_then_sample_and_turn():
    uids = ["9f1c-a", "03be-b", "77d0-c"]  # uuid-like: their text order is not the dataloader's
    position = {u: i for i, u in enumerate(uids)}
    want = [f"{u}_{s}_{t}" for u in uids for s in range(3) for t in range(2)]
    for seed in range(5):
        keys = list(want)
        random.Random(seed).shuffle(keys)
        assert [keys[i] for i in dataloader_order(keys, position)] == want
    # sample 10 after sample 9: numbers, not text
    keys = [f"{uids[0]}_10_0", f"{uids[0]}_9_0"]
    assert [keys[i] for i in dataloader_order(keys, position)] == [f"{uids[0]}_9_0", f"{uids[0]}_10_0"]


def test_unknown_keys_keep_their_order_after_the_rest():
    position = {"a": 0, "b": 1}
    keys = ["zz_1_0", "b_0_0", "odd-key", "a_1_0", "yy_0_0", "a_0_0"]
    order = [keys[i] for i in dataloader_order(keys, position)]
    assert order == ["a_0_0", "a_1_0", "b_0_0", "zz_1_0", "odd-key", "yy_0_0"]


def test_responses_order_a_group_whatever_sample_index_drew_them():
    # two runs: the same four responses of prompt "a", but sample indices drew other seeds
    position = {"a": 0, "b": 1}
    run1 = {"a_0_0": (5, 1), "a_1_0": (3, 9), "a_2_0": (5, 0), "a_3_0": (4,), "b_0_0": (1,), "b_1_0": (0, 2)}
    run2 = {"a_0_0": (4,), "a_1_0": (5, 0), "a_2_0": (3, 9), "a_3_0": (5, 1), "b_1_0": (1,), "b_0_0": (0, 2)}
    got = []
    for run in (run1, run2):
        keys = list(run)
        random.Random(len(got)).shuffle(keys)
        order = dataloader_order(keys, position, [run[k] for k in keys])
        got.append([run[keys[i]] for i in order])
    assert got[0] == got[1] == [(3, 9), (4,), (5, 0), (5, 1), (0, 2), (1,)]
