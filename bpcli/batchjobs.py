"""Jobs that prepare batches (augmentation's warps), as an engine with one thread runs them.

``train.Run`` registers such a job with its engine and hands back its parts from
``train_batch``'s ``meanwhile``; an engine with workers shares the parts out
(``fast.engine.Engine`` overrides these), one with a single thread runs them
itself. Both engines start from this.
"""


class OneThreadJobs:
    """The batch-preparing part of the engine interface where one thread does all: a
    registered job's parts run here, and a job's rows are one part (every row)."""

    def register(self, job):
        """Make ``job(a, b, c)`` (three ints) something ``run_part`` runs: a part of what
        ``train_batch``'s ``meanwhile`` returns, as ``(handle, a, b, c)``; returns the handle."""
        self.jobs.append(job)
        return len(self.jobs) - 1

    def run_part(self, part):
        """Run one ``(handle, a, b, c)`` of a registered job, here (None: nothing)."""
        if part is not None:
            job, *args = part
            self.jobs[job](*args)

    def split(self, n):
        """Rows [lo, hi) of a batch of n rows for each part of a job whose rows are
        independent: one part, every row, as there is no one to share them with."""
        return [(0, n)]
