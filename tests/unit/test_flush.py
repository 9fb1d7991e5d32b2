import itertools
import random

import pytest

from chalicelib.flush import FlushPolicy


def run(policy: FlushPolicy, events: list[tuple[float, str]]) -> list[tuple[float, str]]:
    sent = []
    for t, text in events:
        sent += [(t, c) for c in policy.add(text, t)]
    sent += [(float("inf"), c) for c in policy.drain()]
    return sent


@pytest.mark.parametrize("seed", range(20))
def test_every_character_is_sent_once_in_order_within_the_chunk_cap(seed):
    rng = random.Random(seed)
    policy = FlushPolicy(interval_ms=rng.choice([0, 10, 50]), max_chars=rng.randint(1, 40))
    t, events = 0.0, []
    for _ in range(200):
        t += rng.expovariate(1 / 8)
        events.append((t, "".join(rng.choice("ab c🚀") for _ in range(rng.randint(0, 12)))))
    sent = run(policy, events)
    assert "".join(c for _, c in sent) == "".join(text for _, text in events)
    assert all(0 < len(c) <= policy.max_chars for _, c in sent)


def test_flushes_are_at_least_one_interval_apart_unless_the_chunk_is_full():
    policy = FlushPolicy(interval_ms=50, max_chars=1000)
    times = [t for t, _ in run(policy, [(float(t), "tok ") for t in range(0, 1000, 5)])]
    finite = [t for t in times if t != float("inf")]
    assert all(b - a >= 50 for a, b in itertools.pairwise(finite))


def test_deadline_is_one_interval_after_the_last_flush():
    policy = FlushPolicy(interval_ms=50, max_chars=100)
    assert policy.deadline_ms() is None
    policy.add("a", 100)
    policy.add("b", 110)
    assert policy.deadline_ms() == 150
    assert policy.due(149) == [] and policy.due(150) == ["b"]


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError):
        FlushPolicy(interval_ms=-1, max_chars=10)
    with pytest.raises(ValueError):
        FlushPolicy(interval_ms=10, max_chars=0)
