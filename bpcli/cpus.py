"""What this process may use of the machine: its CPUs, and the environment variables
that size a BLAS library's own thread pool. No numpy here: ``bp --help`` stays cheap,
and the variables must be set before numpy is first imported."""

import os

#: the thread-pool sizes of OpenBLAS, OpenMP, MKL and BLIS, read once when numpy loads
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def usable_cpus():
    """The CPUs this process may run on (its affinity mask, e.g. under taskset), else all:
    bp train's default thread count, and the most bp tune's --workers may be."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_blas_threads(n):
    """Size BLAS's own pool to ``n`` threads in this process (before numpy is imported)."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(n)
