"""A fixed team of worker threads that each run one task per round, and wait blocked.

The caller runs the first task itself and the workers the others; ``run``
returns when every task has. Waiting is on semaphores (a futex in the
kernel), never a spin: on a machine where another process holds a core, a
waiting thread costs nothing, and BLAS inside the tasks is single-threaded
(``single_threaded_blas``) because OpenBLAS's own threads spin while they
wait for work.
"""

import contextlib
import threading


class Team:
    def __init__(self, size):
        self.size = size
        self.tasks = [None] * size
        self.errors = [None] * size
        self.go = [threading.Semaphore(0) for _ in range(size)]
        self.done = threading.Semaphore(0)
        self.threads = [threading.Thread(target=self._work, args=(i,), daemon=True, name=f"bp-worker-{i}")
                        for i in range(1, size)]
        for t in self.threads:
            t.start()

    def _work(self, i):
        while True:
            self.go[i].acquire()
            task = self.tasks[i]
            if task is None:
                return
            try:
                task()
            except BaseException as err:  # handed to the caller of run, which raises it
                self.errors[i] = err
            self.done.release()

    def run(self, tasks):
        """Run tasks[0] here and tasks[i] on worker i; wait for all; raise the first error.
        A task may be None (nothing to do this round)."""
        others = 0
        for i in range(1, self.size):
            if tasks[i] is not None:
                self.tasks[i] = tasks[i]
                self.go[i].release()
                others += 1
        error = None
        try:
            if tasks[0] is not None:
                tasks[0]()
        except BaseException as err:
            error = err
        for _ in range(others):
            self.done.acquire()
        errors = [e for e in self.errors if e is not None]
        self.errors = [None] * self.size
        if error is not None:
            raise error
        if errors:
            raise errors[0]

    def close(self):
        for i in range(1, self.size):
            self.tasks[i] = None
            self.go[i].release()
        for t in self.threads:
            t.join()


@contextlib.contextmanager
def single_threaded_blas():
    """Every BLAS this process has loaded runs in its caller's thread, for the duration."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the environment variables bp sets before NumPy loads do the same
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
