"""A fixed set of worker threads that share out a round of tasks, and wait blocked.

``run(tasks, meanwhile)`` wakes the workers; each takes the next task not yet
taken until none is left, while the caller runs ``meanwhile`` (the engine's
caller prepares the next batch: it draws its random numbers there, in order,
and hands back the rest of the work as more tasks) and then takes tasks too. Tasks go to
whoever is free, so a thread that the system holds back (another process
busy on its core) delays a round by one task at most, not by its share.
Which thread ran a task never changes its result: each task writes its own
memory, and the engine adds the results up in task order.

Waiting is on semaphores (a futex in the kernel), never a spin: a waiting
thread costs nothing. BLAS inside the tasks runs single-threaded
(``single_threaded_blas``), because OpenBLAS's own threads spin while they
wait for work, on cores that the workers or another process need.
"""

import contextlib
import threading


class WorkerThreads:
    """``workers`` threads that, with the caller, share out each round of tasks (``run``)."""

    def __init__(self, workers):
        self.size = workers
        self.tasks = []
        self.next = 0
        self.lock = threading.Lock()
        self.errors = []
        self.go = threading.Semaphore(0)
        self.done = threading.Semaphore(0)
        self.closing = False
        self.threads = [threading.Thread(target=self._work, daemon=True, name=f"bp-worker-{i}")
                        for i in range(workers)]
        for t in self.threads:
            t.start()

    def _take(self):
        """The next task of this round, or None when all are taken."""
        with self.lock:
            if self.next >= len(self.tasks):
                return None
            task = self.tasks[self.next]
            self.next += 1
            return task

    def _run_tasks(self):
        while (task := self._take()) is not None:
            try:
                task()
            except BaseException as err:  # handed to the caller of run, which raises it
                self.errors.append(err)

    def _work(self):
        while True:
            self.go.acquire()
            if self.closing:
                return
            self._run_tasks()
            self.done.release()

    def run(self, tasks, meanwhile=None):
        """Run every task (None entries skipped) on the workers and, once ``meanwhile`` has
        run here, on this thread too; wait for all; raise the first error (``meanwhile``'s first).
        ``meanwhile`` may return more tasks, which join this round after the others."""
        self.tasks, self.next, self.errors = [t for t in tasks if t is not None], 0, []
        for _ in range(self.size):
            self.go.release()
        error = None
        try:
            if meanwhile is not None:
                more = meanwhile()
                if more:
                    with self.lock:
                        self.tasks.extend(more)
        except BaseException as err:
            error = err
        self._run_tasks()
        for _ in range(self.size):
            self.done.acquire()
        self.tasks = []
        if error is not None:
            raise error
        if self.errors:
            raise self.errors[0]

    def close(self):
        self.closing = True
        for _ in range(self.size):
            self.go.release()
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
