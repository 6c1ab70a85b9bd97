"""The engine's worker processes (bpcli.fast.parallel.processes): real forked processes over shared memory."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from bpcli.fast.parallel import processes
from bpcli.fast.parallel.processes import WorkerProcesses

pytestmark = pytest.mark.skipif(not processes.available(), reason="worker processes need fork (Linux)")


def gone(pid):
    """Whether process pid has exited (a zombie of ours counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling a process's state, not waiting out a guess
    return True


def test_workers_run_the_calls_sent_in_order_into_shared_memory():
    out = processes.shared_zeros((2, 3), np.int64)

    def put(worker, column, value):
        out[worker, column] = value

    def add(worker, column, value):
        out[worker, column] += value

    workers = WorkerProcesses(2, [put, add])
    pids = [p.pid for p in workers.procs]
    try:
        for value in (5, 7, 11):
            for worker in (0, 1):
                workers.send(worker, 0, worker, 0, value)
                workers.send(worker, 1, worker, 0, worker + 1)  # after the put: calls run in order
                workers.send(worker, 0, worker, 2, value * 10)
            workers.finish()
            assert out.tolist() == [[value + 1, 0, value * 10], [value + 2, 0, value * 10]]
        workers.finish()  # a round with no calls
    finally:
        workers.close()
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert all(gone(p) for p in pids) and workers.procs == []


def test_a_call_is_checked_before_it_is_sent():
    workers = WorkerProcesses(1, [lambda a, b, c: None])
    try:
        with pytest.raises(ValueError, match="no job 1"):
            workers.send(0, 1)
        for _ in range(WorkerProcesses.SLOTS - 1):
            workers.send(0, 0)
        with pytest.raises(ValueError, match="more than 15 calls"):
            workers.send(0, 0)
        workers.finish()
    finally:
        workers.close()


def test_memory_not_shared_stays_the_workers_own():
    private = np.zeros(3)
    workers = WorkerProcesses(1, [lambda a, b, c: private.fill(a)])
    try:
        workers.send(0, 0, 9)
        workers.finish()
    finally:
        workers.close()
    assert private.tolist() == [0, 0, 0]  # what shared_empty is for


def test_a_workers_error_is_raised_by_the_trainer_and_the_workers_go_on():
    out = processes.shared_zeros(2, np.int64)

    def job(a, b, c):
        if a == 2:
            raise ValueError("shapes do not multiply")
        out[b] = a

    workers = WorkerProcesses(1, [job])
    try:
        workers.send(0, 0, 2, 0)
        workers.send(0, 0, 4, 1)  # skipped: an earlier call of the round raised
        with pytest.raises(RuntimeError, match="in engine worker 1: Traceback") as raised:
            workers.finish()
        assert "in job\n" in str(raised.value) and "ValueError: shapes do not multiply" in str(raised.value)
        assert out.tolist() == [0, 0]
        workers.send(0, 0, 3, 0)
        workers.finish()
        assert out.tolist() == [3, 0]
    finally:
        workers.close()


def test_a_killed_worker_is_an_error_not_a_hang():
    def job(a, b, c):
        if a:
            os.kill(os.getpid(), signal.SIGKILL)

    workers = WorkerProcesses(2, [job])
    try:
        workers.send(0, 0, 0)
        workers.send(1, 0, 0)
        workers.finish()
        workers.send(0, 0, 0)
        workers.send(1, 0, 1)
        with pytest.raises(processes.WorkerDied, match=r"died \(killed by SIGKILL\)"):
            workers.finish()
        assert workers.procs == []  # the others were stopped
        with pytest.raises(processes.WorkerDied):
            workers.send(0, 0)
    finally:
        workers.close()


def test_workers_exit_when_the_trainer_is_killed(tmp_path):
    script = textwrap.dedent("""
        import sys
        from bpcli.fast.parallel.processes import WorkerProcesses
        workers = WorkerProcesses(2, [])
        print(" ".join(str(p.pid) for p in workers.procs), flush=True)
        sys.stdin.read()  # until killed
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and not any(gone(p) for p in pids)
        proc.kill()
        proc.wait()
        # orphans are reparented (to init or a subreaper), which reaps them once they exit
        assert wait_until(lambda: all(gone(p) for p in pids)), "worker processes outlived their trainer"
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stdout.close()


def test_workers_ignore_ctrl_c_which_is_the_trainers_to_handle():
    out = processes.shared_zeros(1, np.int64)

    def job(a, b, c):
        os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C sends to the process group
        out[0] = a

    workers = WorkerProcesses(1, [job])
    try:
        workers.send(0, 0, 4)
        workers.finish()
        assert out[0] == 4
    finally:
        workers.close()


def test_an_interrupted_wait_closes_the_workers_rather_than_mix_up_rounds():
    """A KeyboardInterrupt while waiting (or any error) leaves workers mid-round: the workers
    are closed, so that no later round can take this one's late posts for its own."""
    import threading

    started = processes.shared_zeros(1, np.int64)

    def slow(a, b, c):
        started[0] = 1
        while True:
            pass  # until stopped

    workers = WorkerProcesses(1, [slow])
    try:
        workers.send(0, 0)
        interrupt = threading.Timer(0.2, lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGINT))
        interrupt.start()
        with pytest.raises(KeyboardInterrupt):
            workers.finish()
        assert started[0] == 1 and workers.procs == []
        with pytest.raises(processes.WorkerDied, match="closed"):
            workers.send(0, 0)
    finally:
        workers.close()


def test_workers_left_open_does_not_keep_the_interpreter_from_exiting(tmp_path):
    script = textwrap.dedent("""
        import signal
        from bpcli.fast.parallel.processes import WorkerProcesses
        signal.signal(signal.SIGTERM, lambda *a: None)  # what bp train's handler does to the workers' parent
        workers = WorkerProcesses(2, [lambda a, b, c: None])
        workers.send(0, 0)
        workers.finish()
        print(" ".join(str(p.pid) for p in workers.procs), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert all(gone(int(p)) for p in done.stdout.split())


def test_each_worker_keeps_to_a_cpu_of_its_own_not_the_trainers_first():
    allowed = sorted(os.sched_getaffinity(0))
    count = min(2, len(allowed) - 1)
    if count < 1:
        pytest.skip(f"this process may use {len(allowed)} CPU: no CPU to spare for a worker")
    seen = processes.shared_zeros((count, len(allowed) + 1), np.int64)

    def affinity(worker, b, c):
        cpus = sorted(os.sched_getaffinity(0))
        seen[worker, :len(cpus) + 1] = [len(cpus), *cpus]

    workers = WorkerProcesses(count, [affinity])
    try:
        for i in range(count):
            workers.send(i, 0, i)
        workers.finish()
    finally:
        workers.close()
    assert [row[:2].tolist() for row in seen] == [[1, cpu] for cpu in allowed[1:count + 1]]
    assert sorted(os.sched_getaffinity(0)) == allowed  # the trainer's own is left alone
