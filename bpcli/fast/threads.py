"""A fixed team of worker threads that each run one task per round, and wait blocked.

Every task runs on a worker of its own while the caller does something else
(``meanwhile``: the engine's caller prepares the next batch), then waits;
``run`` returns when every task has. Waiting is on semaphores (a futex in the
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
                        for i in range(size)]
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

    def run(self, tasks, meanwhile=None):
        """Run tasks[i] on worker i and ``meanwhile`` here; wait for all; raise the first
        error (``meanwhile``'s first). A task may be None (nothing to do this round)."""
        started = 0
        for i, task in enumerate(tasks):
            if task is not None:
                self.tasks[i] = task
                self.go[i].release()
                started += 1
        error = None
        try:
            if meanwhile is not None:
                meanwhile()
        except BaseException as err:
            error = err
        for _ in range(started):
            self.done.acquire()
        errors = [e for e in self.errors if e is not None]
        self.errors = [None] * self.size
        if error is not None:
            raise error
        if errors:
            raise errors[0]

    def close(self):
        for i in range(self.size):
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
