"""The engine's matrix products and axpys, through SciPy's public BLAS interface.

A BLAS matrix product computes ``C <- alpha * op(A) @ op(B) + beta * C``.
NumPy only ever asks for alpha = 1, beta = 0. Training wants the other
coefficients: with beta = momentum, the product that yields the gradient
adds it straight into the velocity, and with alpha = -lr, beta = 1 plain
SGD moves the weights inside the product itself; ``y <- y + a * x`` (axpy)
is then the whole rest of the update. Each saves passes over the largest
arrays in a step.

``scipy.linalg.blas.sgemm``/``saxpy`` are documented, maintained wrappers
that write in place when told to (``overwrite_c``) and release the GIL, so
worker threads can run them side by side. They are Fortran (column-major)
routines: a row-major product ``C = op(A) @ op(B)`` is asked for as
``C.T = op(B).T @ op(A).T``, which reads the same memory without a copy.
Every call is checked where it is prepared: shapes must multiply, memory
must be float32 with contiguous rows (then the wrappers write into the
caller's own array; ``available()`` checks on a first product that they
do, since a wrapper that copied would silently train nothing), and a batch
must fit what was prepared. A wrong call raises ``ValueError``; the
wrappers check shapes on every call too.

Without SciPy, or with ``BP_DIRECT_BLAS=0``, ``available()`` is False and
the engine uses NumPy's matmul and ufuncs: the same arithmetic up to float
rounding, a little slower. ``describe()`` says which path is in use and why:
``bp train`` prints it and the checkpoint records it.

Why not the BLAS inside NumPy's wheel, as bp did before (ctypes on its
private ``scipy_cblas_sgemm64_`` symbol): a private layout of another
package, no bounds checks, and no faster: ``benchmarks/run.py --blas``
measures both on network a and is in benchmarks/README.md.
"""

import os

import numpy as np

_blas = None        # scipy.linalg.blas, once found usable
_why = None         # why not, when it is not


def available():
    """Whether Product and Axpy below call BLAS directly (else they use NumPy)."""
    global _blas, _why
    if _blas is None and _why is None:
        if os.environ.get("BP_DIRECT_BLAS", "1") == "0":
            _why = "BP_DIRECT_BLAS=0"
        else:
            try:
                from scipy.linalg import blas
            except ImportError as err:
                _why = f"SciPy cannot be imported ({err})"
            else:
                _blas = blas
                if not _agrees():
                    _blas, _why = None, "SciPy's sgemm disagreed with NumPy on a first product"
    return _blas is not None


def describe():
    """One line for the user and the checkpoint: which path computes, and why."""
    if available():
        from scipy import __version__

        return f"scipy.linalg.blas sgemm/saxpy (SciPy {__version__}): fused updates"
    return f"numpy matmul ({_why})"


def _agrees():
    """One small product and axpy, compared with NumPy's."""
    rng = np.random.default_rng(0)
    A, B = rng.random((5, 3), dtype=np.float32), rng.random((5, 4), dtype=np.float32)
    C = rng.random((3, 4), dtype=np.float32)
    expected = 2.0 * A.T @ B + 0.5 * C
    Product(A, B, C, trans_a=True, batch="k")(5, 2.0, 0.5)
    x, y = np.arange(6, dtype=np.float32), np.ones(6, dtype=np.float32)
    Axpy(x, y)(-2.0)
    return np.allclose(C, expected, rtol=1e-5) and np.array_equal(y, 1 - 2 * np.arange(6, dtype=np.float32))


def _check_rows(arr, what):
    if arr.dtype != np.float32 or arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D float32 array, not {arr.ndim}-D {arr.dtype}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous (a row prefix of a buffer is), got strides {arr.strides}")


class Product:
    """``C <- alpha * op(A) @ op(B) + beta * C`` over fixed float32 memory, ready to call.

    a, b, c are C-contiguous 2-D float32 arrays (row prefixes of buffers are
    fine); op(A) = a.T if trans_a, else a; likewise for B. ``batch`` names
    the dimension that a shorter last batch shrinks: "m" (the rows of C) or
    "k" (the summed dimension). A call for ``rows`` examples uses the first
    ``rows`` entries of that dimension, and refuses more than were prepared.
    """

    def __init__(self, a, b, c, trans_a=False, trans_b=False, batch="m"):
        for arr, what in ((a, "A"), (b, "B"), (c, "C")):
            _check_rows(arr, what)
        m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
        n = b.shape[0] if trans_b else b.shape[1]
        if c.shape != (m, n) or (b.shape[1] if trans_b else b.shape[0]) != k:
            raise ValueError(f"shapes do not multiply: {a.shape}, {b.shape} -> {c.shape}")
        if batch not in ("m", "k"):
            raise ValueError(f"batch must be 'm' or 'k', not {batch!r}")
        self.a, self.b, self.c = a, b, c
        self.trans_a, self.trans_b, self.batch = trans_a, trans_b, batch
        self.full = m if batch == "m" else k
        self.direct = available()
        self.views = {}
        self._prepare(self.full)

    def _prepare(self, rows):
        """The arguments for a batch of ``rows``: row prefixes of the arrays the batch runs through."""
        if rows not in self.views:
            if not 0 < rows <= self.full:
                raise ValueError(f"a batch of {rows} rows does not fit this product's {self.full}")
            a, b, c = self.a, self.b, self.c
            if self.batch == "m":   # the rows of C and of op(A)
                a, c = (a[:, :rows] if self.trans_a else a[:rows]), c[:rows]
            else:                   # the columns of op(A) and the rows of op(B)
                a = a[:rows] if self.trans_a else a[:, :rows]
                b = b[:, :rows] if self.trans_b else b[:rows]
            if self.direct:  # the column-major view of the same memory: C.T = op(B).T @ op(A).T
                self.views[rows] = (b.T, a.T, c.T)
            else:
                self.views[rows] = (a.T if self.trans_a else a, b.T if self.trans_b else b, c)
        return self.views[rows]

    def _call(self, rows, alpha, beta):
        x, y, c = self.views.get(rows) or self._prepare(rows)
        if self.direct:
            return _blas.sgemm(alpha, x, y, beta, c, trans_a=self.trans_b, trans_b=self.trans_a, overwrite_c=1)
        # NumPy: the same update in two passes
        if beta == 0.0:
            np.matmul(x, y, out=c)
            if alpha != 1.0:
                c *= alpha
        else:
            if beta != 1.0:
                c *= beta
            c += alpha * (x @ y)
        return c

    def __call__(self, rows, alpha=1.0, beta=0.0):
        """Run it for a batch of ``rows`` examples."""
        self._call(rows, alpha, beta)


class Axpy:
    """``y <- y + alpha * x`` over two fixed 1-D float32 arrays of one shape, ready to
    call: one BLAS call where ``available()``, else NumPy through ``scratch`` (shaped like x)."""

    def __init__(self, x, y, scratch=None):
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"Axpy needs two 1-D arrays of one shape, not {x.shape} and {y.shape}")
        self.x, self.y = x, y
        self.direct = (available() and x.dtype == y.dtype == np.float32
                       and x.flags.c_contiguous and y.flags.c_contiguous)
        if not self.direct:
            self.scratch = np.empty_like(x) if scratch is None else scratch

    def __call__(self, alpha):
        if self.direct:
            _blas.saxpy(self.x, self.y, a=alpha)
        else:
            self.y += np.multiply(self.x, alpha, out=self.scratch)
