"""shared.memo.Memo: once per key across threads, errors handed to every caller, results to close."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.memo import Memo


def test_one_call_per_key_for_concurrent_callers():
    memo, calls, gate = Memo(), [], threading.Event()

    def slow():
        calls.append(1)
        gate.wait(5)
        return object()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(memo.get, "pat", slow) for _ in range(8)]
        gate.set()
        values = {id(f.result()) for f in futures}
    assert len(calls) == 1 and len(values) == 1


def test_an_error_is_raised_to_every_caller_and_results_skip_it():
    memo = Memo()
    with pytest.raises(KeyError):
        memo.get("bad", lambda: {}["x"])
    with pytest.raises(KeyError):
        memo.get("bad", lambda: "not run again")
    assert memo.get("good", lambda: "repo") == "repo"
    assert memo.results() == ["repo"]
