"""The engine's worker threads (bpcli.fast.parallel.threads): real threads, real errors."""

import pytest

from bpcli.fast.parallel.threads import WorkerThreads


def test_worker_threads_run_every_task_once_and_raise_a_workers_error():
    workers = WorkerThreads(2)
    try:
        done = []
        workers.run([lambda i=i: done.append(i) for i in range(7)] + [None], meanwhile=lambda: done.append("here"))
        assert sorted(done, key=str) == [0, 1, 2, 3, 4, 5, 6, "here"]
        with pytest.raises(KeyError):
            workers.run([lambda: done.append(3)] * 3, meanwhile=lambda: {}["meanwhile"])
        assert done.count(3) == 4  # the tasks ran to the end all the same

        def fail():
            raise ZeroDivisionError("in a worker")
        with pytest.raises(ZeroDivisionError):
            workers.run([lambda: None, fail, lambda: None])
        workers.run([lambda: done.append(5)] * 3)  # still usable afterwards
        assert done.count(5) == 4  # (one 5 from the first round)
    finally:
        workers.close()
    assert not any(t.is_alive() for t in workers.threads)
