"""opcd.engine: the rollout's log-prob arrays, from vLLM's flat layout and from its per-position dicts."""
import types

import numpy as np
import pytest

from opcd.engine import Sample, dict_topk, flat_topk


def _flat(rows):
    """vLLM's FlatLogprobs fields for positions given as [(sampled id, sampled lp), [(id, lp) * k]]."""
    ids, lps, starts, ends = [], [], [], []
    for (sid, slp), top in rows:
        starts.append(len(ids))
        ids += [sid] + [t for t, _ in top]
        lps += [slp] + [v for _, v in top]
        ends.append(len(ids))
    return ids, lps, starts, ends


ROWS = [((7, -0.2), [(7, -0.2), (3, -1.9)]),  # the sampled token is the most likely one
        ((9, -3.5), [(4, -0.4), (5, -1.2)])]  # the sampled token is outside the top-2


def test_flat_topk_splits_the_sampled_token_from_the_ranked_top_k():
    lp, ids, tlp = flat_topk(*_flat(ROWS), k=2)
    assert lp.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == tlp.shape == (2, 2)
    assert lp.tolist() == pytest.approx([-0.2, -3.5])
    assert ids.tolist() == [[7, 3], [4, 5]] and np.allclose(tlp, [[-0.2, -1.9], [-0.4, -1.2]])


def test_flat_topk_refuses_a_layout_it_does_not_understand():
    ids, lps, starts, ends = _flat(ROWS)
    with pytest.raises(ValueError, match="expected 4 log-probs per position"):
        flat_topk(ids, lps, starts, ends, k=3)


def test_dict_topk_gives_the_same_arrays():
    L = lambda lp, rank: types.SimpleNamespace(logprob=lp, rank=rank)  # noqa: E731
    per_position = [{7: L(-0.2, 1), 3: L(-1.9, 2)}, {9: L(-3.5, 40), 4: L(-0.4, 1), 5: L(-1.2, 2)}]
    got = dict_topk([7, 9], per_position, k=2)
    want = flat_topk(*_flat(ROWS), k=2)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and np.allclose(a, b)


def test_sample_stores_arrays_of_fixed_dtypes():
    s = Sample([1], [5, 6], logprobs=[-1.0, -2.0], topk_ids=[[5, 1], [6, 2]], topk_logprobs=[[-1.0, -3.0], [-2.0, -4.0]])
    assert s.logprobs.dtype == np.float32 and s.topk_ids.dtype == np.int64 and s.topk_ids.shape == (2, 2)
    empty = Sample([1], [5])
    assert empty.logprobs.shape == (0,) and empty.topk_ids.shape == (0, 0) and empty.policy_tokens == 1
