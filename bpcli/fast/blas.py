"""The engine's matrix products and axpys, called with the coefficients NumPy never asks for.

A BLAS matrix product computes ``C <- alpha * op(A) @ op(B) + beta * C``.
NumPy only ever asks for alpha = 1, beta = 0. Training wants the other
coefficients: with beta = momentum, the product that yields the gradient
adds it straight into the velocity, and with alpha = -lr, beta = 1 plain
SGD moves the weights inside the product itself; ``y <- y + a * x`` (axpy)
is then the whole rest of the update. Each saves passes over the largest
arrays in a step.

Two ways to reach BLAS, the first usable one is taken (``BP_BLAS=scipy``,
``ctypes`` or ``numpy`` chooses):

* ``ctypes``: the OpenBLAS inside NumPy's own wheel, through its ILP64 CBLAS
  symbols (``scipy_cblas_sgemm64_``). Not a public interface, but the
  kernels NumPy itself uses, and measurably faster: SciPy's bundled OpenBLAS
  ran network a's products 8-22% slower and a whole epoch ~20% slower
  (benchmarks/README.md, "BLAS path"; ``benchmarks/run.py`` has a row for
  each path), above the 5% this project accepts as the price of a public
  interface.
* ``scipy``: ``scipy.linalg.blas.sgemm``/``saxpy``, documented, maintained
  wrappers that write in place when told to (``overwrite_c``). They are
  Fortran (column-major) routines: a row-major ``C = op(A) @ op(B)`` is asked
  for as ``C.T = op(B).T @ op(A).T``, the same memory without a copy.

Both release the GIL (the ctypes path for products of HOLD_GIL_BELOW multiply-adds
and more), so the engine's threads run them side by side. Every
call is checked where it is prepared, whichever the path: shapes must
multiply, memory must be float32 with contiguous rows (so the product lands
in the caller's own array), and a call may not ask for more rows than were
prepared. A wrong call raises ``ValueError``, never reaches BLAS. A first
product and axpy are checked against NumPy before a path is used.

Without either (or with ``BP_BLAS=numpy``, or the older ``BP_DIRECT_BLAS=0``)
the engine uses NumPy's matmul and ufuncs: the same arithmetic up to float
rounding, a little slower. ``describe()`` says which path is in use and why:
``bp train`` prints it and the checkpoint records it (``record()``).

Whichever the path, OpenBLAS computes with the kernels it picked for the CPU
when it was loaded (``kernel()``: "SkylakeX", "Haswell", ...; the environment
variable OPENBLAS_CORETYPE overrides the pick). Kernels for other vector
widths add a product's terms in another order, so the same training differs
in its last bits between them, and from there on in everything after.
"""

import ctypes
import glob
import os

import numpy as np

PATHS = ("ctypes", "scipy")          # tried in this order
# Multiply-adds below which the ctypes path keeps the GIL during a product. Releasing
# it lets another thread run Python meanwhile, but taking it back then means waiting
# for that thread and a wake-up: microseconds that a small product (the last layers
# of a narrow net, the bias rows) does not repay. Two threads then hand the GIL over
# only around the products worth it.
HOLD_GIL_BELOW = 1 << 18
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
_SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_saxpy64_"), ("cblas_sgemm64_", "cblas_saxpy64_"))

_path = None        # "ctypes" or "scipy" once chosen; None: NumPy
_why = None         # why this path (set once chosen)
_gemm = _axpy = None
_UNKNOWN = object()
_kernel = _UNKNOWN  # kernel()'s answer, once asked


def available():
    """Whether Product and Axpy below call BLAS directly (else they use NumPy)."""
    if _why is None:
        _choose()
    return _path is not None


def path():
    """"ctypes", "scipy", or None (NumPy)."""
    available()
    return _path


def describe():
    """One line for the user and the checkpoint: which path computes, and why, and with which kernels."""
    available()
    kernels = f", {kernel()} kernels" if kernel() else ""
    if _path == "ctypes":
        return f"BLAS: NumPy's own OpenBLAS via ctypes ({_why}){kernels}"
    if _path == "scipy":
        from scipy import __version__

        return f"BLAS: scipy.linalg.blas (SciPy {__version__}; {_why}){kernels}"
    return f"BLAS: numpy matmul ({_why}){kernels}"


def record():
    """What a checkpoint keeps of the BLAS it trained under: bits are only reproduced on the same kernels."""
    return {"path": path() or "numpy", "kernel": kernel(), "description": describe()}


def kernel():
    """The OpenBLAS kernels the products run on ("SkylakeX", "Haswell", "Sandybridge", ...),
    as threadpoolctl reads them from the library in use; None where that cannot be told
    (another BLAS, no threadpoolctl). Fixed when the library loads: asked once."""
    global _kernel
    if _kernel is _UNKNOWN:
        _kernel = _read_kernel()
    return _kernel


def _read_kernel():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    if path() == "scipy":
        import scipy

        home = os.path.dirname(scipy.__file__)
    else:  # the ctypes path and NumPy's matmul both compute in NumPy's own BLAS
        home = os.path.dirname(np.__file__)
    # a wheel's libraries sit in <package>.libs beside it (Linux, Windows) or in .dylibs inside it (macOS)
    own = {os.path.realpath(d) for d in (home + ".libs", os.path.join(home, ".dylibs"))}
    libraries = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
    mine = [i for i in libraries if os.path.dirname(os.path.realpath(i.get("filepath", ""))) in own]
    found = mine or (libraries if len(libraries) == 1 else [])  # e.g. a distribution's system OpenBLAS
    name = found[0].get("architecture") if found else None
    return name if isinstance(name, str) and name else None


def _choose():
    global _path, _why, _gemm, _axpy
    asked = os.environ.get("BP_BLAS", "").strip().lower()
    if os.environ.get("BP_DIRECT_BLAS", "1") == "0":
        asked = "numpy"
    if asked == "numpy":
        _path, _why = None, "BP_BLAS=numpy"
        return
    tried = []
    for name in ((asked,) if asked in PATHS else PATHS):
        found = _bind_ctypes() if name == "ctypes" else _bind_scipy()
        if isinstance(found, str):
            tried.append(f"{name}: {found}")
            continue
        _path, (_gemm, _axpy) = name, found
        _why = "being checked"  # (Product and Axpy below ask available())
        if _agrees():
            _why = (f"BP_BLAS={asked}" if asked == name else
                    "the faster path here" if name == "ctypes" else "NumPy's own OpenBLAS not usable")
            return
        tried.append(f"{name}: a first product disagreed with NumPy's")
    _path, _gemm, _axpy = None, None, None
    _why = "; ".join(tried) or "no BLAS found"


def _bind_scipy():
    try:
        from scipy.linalg import blas
    except ImportError as err:
        return f"SciPy cannot be imported ({err})"
    return blas.sgemm, blas.saxpy


def _bind_ctypes():
    """NumPy's OpenBLAS, only through ILP64 symbols with the 64_ suffix (integer width certain)."""
    here = os.path.dirname(np.__file__)
    candidates = []
    for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*", "../numpy.libs/*blas*"):
        candidates += sorted(glob.glob(os.path.join(here, pattern)))
    for lib_path in candidates:
        try:
            lib, held = ctypes.CDLL(lib_path), ctypes.PyDLL(lib_path)
        except OSError:
            continue
        for gemm_name, axpy_name in _SYMBOLS:
            gemm, axpy = getattr(lib, gemm_name, None), getattr(lib, axpy_name, None)
            if gemm is not None and axpy is not None:
                gemm_held = getattr(held, gemm_name)
                gemm.restype = gemm_held.restype = axpy.restype = None  # arguments: ctypes objects (Product)
                return (gemm, gemm_held), axpy
    return "no ILP64 OpenBLAS inside NumPy's wheel"


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
        self.path = path()
        if self.path == "ctypes":  # (the GIL released for a large product, kept for a small one)
            self.gemm = _gemm[0] if m * n * k >= HOLD_GIL_BELOW else _gemm[1]
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)  # the ctypes path's, reused
        self.prepared = {}
        self._prepare(self.full)

    def _prepare(self, rows):
        """The arguments for a batch of ``rows``: row prefixes of the arrays the batch runs through."""
        if not 0 < rows <= self.full:
            raise ValueError(f"a batch of {rows} rows does not fit this product's {self.full}")
        a, b, c = self.a, self.b, self.c
        if self.batch == "m":   # the rows of C and of op(A)
            a, c = (a[:, :rows] if self.trans_a else a[:rows]), c[:rows]
        else:                   # the columns of op(A) and the rows of op(B)
            a = a[:rows] if self.trans_a else a[:, :rows]
            b = b[:, :rows] if self.trans_b else b[:rows]
        if self.path == "ctypes":  # row-major CBLAS; the arrays are kept alive by self.a/b/c
            m, k = (a.shape[1], a.shape[0]) if self.trans_a else a.shape
            i64, ptr = ctypes.c_int64, ctypes.c_void_p
            args = (ctypes.c_int(ROW_MAJOR), ctypes.c_int(TRANS if self.trans_a else NO_TRANS),
                    ctypes.c_int(TRANS if self.trans_b else NO_TRANS), i64(m), i64(c.shape[1]), i64(k),
                    self.alpha, ptr(a.ctypes.data), i64(_row_stride(a)), ptr(b.ctypes.data),
                    i64(_row_stride(b)), self.beta, ptr(c.ctypes.data), i64(_row_stride(c)))
        elif self.path == "scipy":  # the column-major view of the same memory: C.T = op(B).T @ op(A).T
            args = (b.T, a.T, c.T, int(self.trans_b), int(self.trans_a))
        else:
            args = (a.T if self.trans_a else a, b.T if self.trans_b else b, c)
        self.prepared[rows] = args
        return args

    def __call__(self, rows, alpha=1.0, beta=0.0):
        """Run it for a batch of ``rows`` examples (at most the rows it was prepared for)."""
        args = self.prepared.get(rows) or self._prepare(rows)
        if self.path == "ctypes":
            self.alpha.value, self.beta.value = alpha, beta
            self.gemm(*args)
        elif self.path == "scipy":
            x, y, c, trans_x, trans_y = args
            _gemm(alpha, x, y, beta, c, trans_x, trans_y, 1)  # positional: (..., overwrite_c=1)
        else:  # NumPy: the same update in two passes
            x, y, c = args
            if beta == 0.0:
                np.matmul(x, y, out=c)
                if alpha != 1.0:
                    c *= alpha
            else:
                if beta != 1.0:
                    c *= beta
                c += alpha * (x @ y)


def _row_stride(arr):
    """BLAS's leading dimension: elements from one row to the next (a single row may
    report any stride, even 0; BLAS wants at least the row's length)."""
    if arr.shape[0] == 1:
        return max(arr.strides[0] // arr.itemsize, arr.shape[1])
    return arr.strides[0] // arr.itemsize


class Axpy:
    """``y <- y + alpha * x`` over two fixed 1-D float32 arrays of one shape, ready to
    call: one BLAS call where ``available()``, else NumPy through ``scratch`` (shaped like x)."""

    def __init__(self, x, y, scratch=None):
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"Axpy needs two 1-D arrays of one shape, not {x.shape} and {y.shape}")
        self.x, self.y = x, y
        direct = available() and x.dtype == y.dtype == np.float32 and x.flags.c_contiguous and y.flags.c_contiguous
        self.path = path() if direct else None
        if self.path == "ctypes":
            self.alpha = ctypes.c_float(0.0)
            i64 = ctypes.c_int64
            self.args = (i64(x.size), self.alpha, ctypes.c_void_p(x.ctypes.data), i64(1),
                         ctypes.c_void_p(y.ctypes.data), i64(1))
        elif self.path is None:
            self.scratch = np.empty_like(x) if scratch is None else scratch

    def __call__(self, alpha):
        if self.path == "ctypes":
            self.alpha.value = alpha
            _axpy(*self.args)
        elif self.path == "scipy":
            _axpy(self.x, self.y, a=alpha)
        else:
            self.y += np.multiply(self.x, alpha, out=self.scratch)
