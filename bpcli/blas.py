"""Direct calls into the BLAS that NumPy itself ships, for the two things
``np.matmul`` cannot say.

A BLAS matrix product computes ``C <- alpha * A @ B + beta * C``. NumPy only
ever asks for alpha = 1, beta = 0. Training wants the other coefficients:
with beta = momentum, the product that yields the gradient adds it straight
into the velocity, and with alpha = -lr, beta = 1 plain SGD moves the weights
inside the product itself; ``y <- y + a * x`` (axpy) is then the whole rest
of the update. Each saves passes over the largest arrays in the step.

Only an ILP64 OpenBLAS with suffixed symbols is used (``scipy_cblas_sgemm64_``,
as in NumPy's own wheels), because its integer width is then certain; the
library is the one NumPy already loaded, so ``--threads`` applies to it. A
first call is checked against NumPy. Anywhere else (another BLAS, a NumPy
built differently) ``available()`` is False and training uses plain NumPy:
the same arithmetic, a little slower. ``BP_DIRECT_BLAS=0`` turns it off.

A call is prepared once for memory that training reuses (``Product``,
``Axpy``): converting arguments, even looking up an array's address, costs
about as much as a small product.
"""

import ctypes
import glob
import os

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
_SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_saxpy64_"), ("cblas_sgemm64_", "cblas_saxpy64_"))

_lib = None      # (sgemm, saxpy) once found
_checked = False


def _candidates():
    here = os.path.dirname(np.__file__)
    for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*", "../numpy.libs/*blas*"):
        yield from sorted(glob.glob(os.path.join(here, pattern)))
    try:  # whatever BLAS this process has loaded (Linux)
        with open("/proc/self/maps") as maps:
            yield from sorted({line.split()[-1] for line in maps if "blas" in line.rsplit("/", 1)[-1]})
    except OSError:
        pass


def _bind(path):
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for gemm_name, axpy_name in _SYMBOLS:
        gemm, axpy = getattr(lib, gemm_name, None), getattr(lib, axpy_name, None)
        if gemm is not None and axpy is not None:
            gemm.restype = axpy.restype = None  # arguments: always ctypes objects (see Product)
            return gemm, axpy
    return None


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


def available():
    """Whether Product and Axpy below can be used."""
    global _lib, _checked
    if not _checked:
        _checked = True
        if os.environ.get("BP_DIRECT_BLAS", "1") != "0":
            for path in _candidates():
                _lib = _bind(path)
                if _lib and _agrees():
                    break
                _lib = None
    return _lib is not None


class Product:
    """``C <- alpha * op(A) @ op(B) + beta * C`` over fixed float32 memory, ready to call.

    a, b, c are 2-D arrays with unit column stride, or single columns (row
    prefixes of buffers are fine); op(A) = a.T if trans_a, else a; likewise for B. ``batch`` names
    the dimension that a shorter last batch shrinks: "m" (the rows of C) or
    "k" (the summed dimension). The ctypes arguments are built once: a call
    then costs less than ``np.matmul``'s.
    """

    def __init__(self, a, b, c, trans_a=False, trans_b=False, batch="m"):
        m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
        n = b.shape[0] if trans_b else b.shape[1]
        for arr in (a, b, c):
            if arr.dtype != np.float32 or (arr.strides[1] != 4 and arr.shape[1] > 1):
                raise ValueError("Product needs float32 arrays with contiguous rows")
        if c.shape != (m, n) or (b.shape[1] if trans_b else b.shape[0]) != k:
            raise ValueError(f"shapes do not multiply: {a.shape}, {b.shape} -> {c.shape}")
        i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
        self.arrays = (a, b, c)  # keeps the memory alive
        self.alpha, self.beta = f32(1.0), f32(0.0)
        dims = {"m": i64(m), "n": i64(n), "k": i64(k)}
        self.batch, self.full = dims[batch], dims[batch].value
        self.args = (ctypes.c_int(ROW_MAJOR), ctypes.c_int(TRANS if trans_a else NO_TRANS),
                     ctypes.c_int(TRANS if trans_b else NO_TRANS), dims["m"], dims["n"], dims["k"],
                     self.alpha, ptr(a.ctypes.data), i64(_row_stride(a)), ptr(b.ctypes.data),
                     i64(_row_stride(b)), self.beta, ptr(c.ctypes.data), i64(_row_stride(c)))

    def __call__(self, rows, alpha=1.0, beta=0.0):
        """Run it for a batch of ``rows`` examples."""
        self.batch.value = rows
        self.alpha.value, self.beta.value = alpha, beta
        _lib[0](*self.args)


def _row_stride(arr):
    """BLAS's leading dimension: elements from one row to the next (a single row may
    report any stride, even 0; BLAS wants at least the row's length)."""
    return max(arr.strides[0] // arr.itemsize, arr.shape[1]) if arr.shape[0] == 1 else arr.strides[0] // arr.itemsize


def direct(*arrays):
    """Whether BLAS can be called on these arrays: contiguous float32, and a usable BLAS."""
    return available() and all(a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)


class Axpy:
    """``y <- y + alpha * x`` over two fixed arrays of one shape, ready to call: one BLAS
    call where ``direct(x, y)``, else NumPy through ``scratch`` (shaped like x)."""

    def __init__(self, x, y, scratch=None):
        if x.shape != y.shape:
            raise ValueError(f"Axpy needs two arrays of one shape, not {x.shape} and {y.shape}")
        self.x, self.y = x, y
        self.direct = direct(x, y)
        if self.direct:
            self.alpha = ctypes.c_float(0.0)
            i64 = ctypes.c_int64
            self.args = (i64(x.size), self.alpha, ctypes.c_void_p(x.ctypes.data), i64(1),
                         ctypes.c_void_p(y.ctypes.data), i64(1))
        else:
            self.scratch = np.empty_like(x) if scratch is None else scratch

    def __call__(self, alpha):
        if self.direct:
            self.alpha.value = alpha
            _lib[1](*self.args)
        else:
            self.y += np.multiply(self.x, alpha, out=self.scratch)
