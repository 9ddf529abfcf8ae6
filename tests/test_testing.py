"""minirc.testing's timing helper (the gradient and agreement helpers are exercised by every op test)."""
from minirc.testing import call_times


def test_call_times_warms_up_once_then_times_each_call():
    calls = []
    times = call_times(lambda: calls.append(1), 3)
    assert len(calls) == 4  # one untimed warm-up call, then the three timed ones
    assert len(times) == 3 and all(t >= 0 for t in times)
