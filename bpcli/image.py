"""Turn a person's picture of a digit into the 28x28 input an MNIST model expects
(and a photo of a garment into a Fashion-MNIST one: ``prepare_garment``).

MNIST was made by size-normalising each NIST digit to fit a 20x20 box
(keeping its aspect ratio, anti-aliased, so edges are grey), then placing that
box in a 28x28 field so the ink's centre of mass sits at the centre: white
ink (255) on a black background (0). A photo or a scan is nothing like that:
dark ink on greyish paper, uneven light, noise, a digit anywhere on a large
page. ``prepare`` redoes MNIST's preparation on such a picture:

1. polarity: make the ink light on a dark background, whichever it was;
2. background: subtract the paper level (a plane fitted to the border, or
   a coarse map on larger pictures, so a shadow or a lighting gradient
   across the page goes too), stretch the contrast;
3. noise: a mild blur, then a soft threshold a little above the paper noise;
4. crop to the ink's bounding box, ignoring isolated specks (small connected
   components away from the digit);
5. thicken strokes that would be hairlines at 20 px (a ball-point pen on a
   phone photo) to nearly MNIST's typical width of two pixels;
6. scale the longer side to 20 px (area-averaged, so edges come out grey) and
   shift the box so the centre of mass is at (14, 14).

``load_digit`` does the file part: any image Pillow reads, in any mode,
transparency composited over white, EXIF orientation honoured, huge pictures
refused before decoding and large ones shrunk while decoding. Every failure
is an ``ImageError`` naming the file.

This module imports numpy and Pillow at the top: the CLI imports it lazily,
only in the commands that read images.
"""

import contextlib
import io
import math
import os
import struct
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .fsutil import one_line, open_untrusted, shown_path

#: Pictures with more pixels than this are refused before they are decoded.
MAX_PIXELS = 40_000_000
#: Files larger than this are refused before they are opened by Pillow. A phone
#: photo is 3-15 MB, a page scanned at 600 dpi and saved uncompressed about
#: 105 MB; any picture within MAX_PIXELS, stored uncompressed in 8- or 16-bit
#: RGB (6 bytes a pixel, 240 MB at most), is under this. A bigger file holds
#: more bytes than a picture bp decodes can explain.
MAX_FILE_BYTES = 256 * 2**20
#: The longer side the picture is shrunk to before the numpy work (speed).
WORK_SIZE = 512
#: Ink whose box is smaller than this (in the shrunk picture) is a speck, not a digit.
MIN_DIGIT_SIZE = 8
#: MNIST's geometry.
FIELD = 28
BOX = 20
#: The crop is analysed at 4x the final box before the last area-average.
FINE = 4 * BOX
#: MNIST strokes are 2 px wide in the 20 px box (the test set's median,
#: estimated as 2 * area / perimeter; 5 % are under 1.3). Strokes under
#: MIN_STROKE_WIDTH (hairlines) are thickened to STROKE_WIDTH; others are left be.
STROKE_WIDTH = 1.8
MIN_STROKE_WIDTH = 1.0

# Everything Pillow's decoders are known to raise on a damaged or hostile
# file. Only the Pillow calls sit inside ``try`` blocks catching these, so a
# bug in this module still shows as one.
_DECODE_ERRORS = (
    OSError,  # includes PIL.UnidentifiedImageError and "image file is truncated"
    ValueError,
    SyntaxError,  # some plugins signal a broken header with it
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    MemoryError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,  # turned into an error below
)

_FORMATS_HINT = "PNG, JPEG, BMP, GIF, TIFF or WebP"
_NO_DIGIT_HINT = (
    "no ink stands out from the background; give a picture of one digit, "
    "dark on light or light on dark, filling a good part of the frame"
)


# ---------------------------------------------------------------------------
# Reading a file
# ---------------------------------------------------------------------------

def load_digit(path):
    """Read the image at ``path`` and prepare it like MNIST.

    Returns a ``(784,)`` uint8 array, 0 = background, 255 = ink, row-major
    28x28. Raises ``ImageError`` (one line, naming the file) when the file is
    missing, not an image, damaged, absurdly large, or shows no digit.
    """
    return _prepare_first(read_gray(path), "standard input" if os.fspath(path) == STDIN else shown_path(path))


def load_digit_image(im, name="the image"):
    """``load_digit`` for a Pillow image already in memory (``bpcli.prepare_image``'s
    path for one): the same decoding and preparation; the caller's image is not changed."""
    try:
        _check_size(im, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidates = _decode(im.copy())
    except ImageError:
        raise
    except _DECODE_ERRORS as err:
        raise ImageError(f"cannot read {name}: {_one_line(err) or type(err).__name__}") from None
    return _prepare_first(candidates, name)


def _prepare_first(candidates, name):
    *first, last = candidates
    for gray in first:
        # A transparent picture is tried over white, then over black (light
        # ink on a transparent canvas vanishes over white).
        try:
            return prepare(gray, name=name)
        except ImageError:
            pass
    return prepare(last, name=name)


def load_for(path, dataset):
    """Read the image at ``path`` and prepare it the way ``dataset``'s pictures were
    made (a ``datasets.Dataset``): clothes like Fashion-MNIST (``prepare_garment``),
    ink on paper, digits or Kuzushiji characters, like MNIST (``prepare``)."""
    if dataset.noun == "garment":
        # transparency over white: products are photographed on white
        return prepare_garment(read_gray(path)[0], name=shown_path(path))
    return load_digit(path)


def read_gray(path):
    """Decode ``path`` into grey-level float32 arrays in [0, 1] (1 = white).

    Returns a list of candidates to try in order: one array, or two for
    pictures with transparency (composited over white, then over black).
    The picture is already shrunk so its longer side is at most about
    ``WORK_SIZE`` pixels.

    The file is opened by ``fsutil.open_untrusted`` (a FIFO, a device, a
    folder, a symlink loop or a file over ``MAX_FILE_BYTES`` is refused
    before a byte is read) and Pillow reads that open file, so what was
    checked is what is decoded.
    """
    if os.fspath(path) == STDIN:
        return _read_open_file(io.BytesIO(_read_stdin()), "the image on standard input")
    shown = shown_path(path)
    f, size = open_untrusted(path, "image", ImageError, max_bytes=MAX_FILE_BYTES,
                             hint=f"; give the path of a picture file ({_FORMATS_HINT}, up to "
                                  f"{MAX_FILE_BYTES // 2**20} MB)")
    with f:
        if size == 0:
            raise ImageError(f"cannot read image {shown}: the file is empty; save the picture again")
        return _read_open_file(f, shown)


STDIN = "-"  # as an image path: the picture's bytes on standard input (`cat digit.png | bp predict -`)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _read_stdin():
    """The bytes on standard input, at most MAX_FILE_BYTES of them."""
    if sys.stdin is None:
        raise ImageError("no standard input to read an image from (it is closed)")
    data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    if not data:
        raise ImageError("no image on standard input: pipe a picture into it, e.g. cat digit.png | bp predict -")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"the image on standard input is over {MAX_FILE_BYTES // 2**20} MB; "
                         "pass a smaller picture")
    return data


def images_in(folder):
    """The picture files directly in ``folder`` (by suffix), sorted by name."""
    return sorted(entry.path for entry in os.scandir(folder)
                  if entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file())


def _read_open_file(f, shown):
    """Decode the open image file ``f``; ``shown`` is its name as messages print it."""
    with warnings.catch_warnings():
        # Pillow warns about odd-but-readable files (corrupt EXIF, palette
        # transparency); those must not print. A decompression bomb is an error.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(f) as im:
                _check_size(im, shown)
                if im.format == "EPS":
                    # Pillow would run Ghostscript on it.
                    raise ImageError(f"cannot read image {shown}: EPS is not supported; "
                                     f"export it as {_FORMATS_HINT}")
                return _decode(im)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"refusing image {shown}: it is too large to decode safely "
                             f"(over {MAX_PIXELS // 1_000_000} megapixels); "
                             "scale the picture down first") from None
        except _DECODE_ERRORS as err:
            if isinstance(err, UnidentifiedImageError):
                raise ImageError(f"cannot read image {shown}: not an image Pillow can read; "
                                 f"save it as {_FORMATS_HINT}") from None
            raise ImageError(f"cannot read image {shown}: the file is damaged or truncated "
                             f"({_one_line(err) or type(err).__name__}); "
                             "save or export the picture again") from None


def _one_line(err):
    return one_line(" ".join(str(err).split()))


def _check_size(im, shown):
    """Refuse absurd dimensions from the header, before any pixel is decoded."""
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(f"cannot read image {shown}: it is {w}x{h} pixels, empty; "
                         "save the picture again")
    if w * h > MAX_PIXELS:
        raise ImageError(f"refusing image {shown}: {w}x{h} is {w * h / 1e6:.0f} megapixels, "
                         f"more than the {MAX_PIXELS // 1_000_000} megapixel limit; "
                         "scale the picture down first")


def _decode(im):
    """Pillow image (opened, not loaded) -> list of float32 grey arrays."""
    w, h = im.size
    factor = max(w, h) / WORK_SIZE
    if factor >= 2:
        # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: much faster.
        im.draft("L" if im.mode == "RGB" else None,
                 (max(1, int(w / factor)), max(1, int(h / factor))))
    if im.format == "TIFF":
        with _quiet_stderr():  # libtiff prints its complaints itself
            im.load()
    else:
        im.load()  # the first frame of an animated GIF/WebP/TIFF
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except _DECODE_ERRORS:
        pass  # unreadable EXIF: keep the picture as stored

    mode = im.mode
    scale = None  # divisor to bring integer or float modes to [0, 1]
    if mode in ("L", "LA", "I", "F"):
        pass
    elif mode.startswith("I;16"):
        im, scale = im.convert("I"), 65535.0
    elif mode == "P" and "transparency" not in im.info:
        im = im.convert("L")
    elif mode in ("P", "PA", "RGBA", "RGBa", "La") or "A" in im.getbands():
        im = im.convert("RGBA").convert("LA") if mode != "La" else im.convert("LA")
    elif mode in ("1", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"):
        im = im.convert("L")
    else:  # LAB and anything exotic
        im = im.convert("RGB").convert("L")

    w, h = im.size
    factor = math.ceil(max(w, h) / WORK_SIZE)
    if factor > 1:
        im = im.reduce(factor)  # box average: anti-aliased

    if im.mode == "LA":
        lum, alpha = (np.asarray(band, dtype=np.float32) / 255.0 for band in im.split())
        if alpha.min() >= 1.0:
            return [lum]
        covered = lum * alpha
        return [covered + (1.0 - alpha), covered]
    arr = np.asarray(im, dtype=np.float32)
    if im.mode == "L":
        return [arr / 255.0]
    return [_to_unit(arr, scale, floats=im.mode == "F")]


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C libraries writing to file descriptor 2 (bp's errors are one line)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield  # no real stderr to silence
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _to_unit(arr, scale=None, floats=False):
    """Integer ('I', 16-bit) or float ('F') pixels -> [0, 1].

    16-bit pictures come with their scale. Otherwise it is guessed: floats
    already in [0, 1] stay, integers in 0..255 or 0..65535 are 8- or 16-bit
    levels. A picture that then uses less than a quarter of the range (12
    bits in a 16-bit file, floats of any range) is stretched from its
    minimum to its maximum; a blank one stays blank, since "no digit" is
    decided on contrast against noise.
    """
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if scale is None and lo >= 0:
        if hi <= 1:
            scale = 1.0
        elif not floats and hi <= 255:
            scale = 255.0
        elif not floats and hi <= 65535:
            scale = 65535.0
    if scale is not None and (hi - lo) / scale >= 0.25:
        return np.clip(arr / scale, 0.0, 1.0)
    if hi <= lo:
        return np.zeros_like(arr)
    return (arr - lo) / (hi - lo)


# ---------------------------------------------------------------------------
# Preparing an array (pure functions, no I/O)
# ---------------------------------------------------------------------------

def prepare(gray, *, name="the image"):
    """Prepare a grey-level picture like MNIST.

    ``gray``: 2-D array ``(H, W)``, floats in [0, 1] or uint8, either polarity
    (dark ink on light paper or light ink on dark). Returns ``(784,)`` uint8,
    0 = background, 255 = ink. Raises ``ImageError`` "no digit found in
    {name}" when no ink stands out from the background.
    """
    g = _grey_plane(gray, "prepare")

    x, xb = _light_ink(g)
    background = _background(xb)
    x = x - background
    xb = xb - background

    # Is there anything that stands out? The contrast of the brightest
    # (blurred) ink against the spread of the background: the median
    # absolute deviation of the whole picture (robust while ink covers less
    # than half of it) or of its border (robust to a bold digit cropped
    # tightly), whichever is smaller.
    peak = float(xb.max())
    sigma = 1.4826 * min(_mad(_sample(xb)), _mad(_border(xb)))
    if peak < 0.08 or peak < 8.0 * sigma:
        raise ImageError(f"no digit found in {name}: {_NO_DIGIT_HINT}")

    # Stretch so the typical stroke core is 1 (the strongest half of the
    # ink, its 75th percentile), then a soft threshold above the noise.
    core = xb[xb > 0.5 * peak]
    level = float(np.percentile(core, 75)) if core.size else peak
    src = xb if max(x.shape) >= 128 else x  # blur only where it cannot hurt
    thresh = min(0.5, max(0.1, 5.0 * sigma / level))
    ink = np.clip((src / level - thresh) / (1.0 - thresh), 0.0, 1.0)

    ink, size = _drop_specks(ink)
    box = _bbox(ink > 0)
    if size is None and box is not None:
        size = max(box[1] - box[0], box[3] - box[2])
    # Dots of a few pixels (dust, a hot pixel) are no digit either.
    if box is None or size < MIN_DIGIT_SIZE:
        raise ImageError(f"no digit found in {name}: {_NO_DIGIT_HINT}")
    r0, r1, c0, c1 = box
    digit = _normalise_size(ink[r0:r1, c0:c1])
    if digit.max() <= 0:  # pragma: no cover - the crop holds ink by construction
        raise ImageError(f"no digit found in {name}: {_NO_DIGIT_HINT}")
    return _centre(digit).ravel()


def _grey_plane(gray, who):
    """A grey picture as float32 in [0, 1] (integers read as 0-255, NaN as 0), shrunk
    so that its longer side is at most about 2 * WORK_SIZE."""
    g = np.asarray(gray)
    if g.ndim != 2 or g.size == 0:
        raise ValueError(f"{who} expects a 2-D grey image, got shape {g.shape}")
    if g.dtype.kind in "ui":
        g = g.astype(np.float32) / 255.0
    g = np.nan_to_num(g.astype(np.float32, copy=False), nan=0.0)
    if max(g.shape) > 2 * WORK_SIZE:
        g = _shrink(g, math.ceil(max(g.shape) / WORK_SIZE))
    return g


def _mad(a):
    return float(np.median(np.abs(a - np.median(a))))


def _shrink(a, factor):
    """Box-average ``a`` by an integer factor (edges padded by replication)."""
    h, w = a.shape
    H, W = math.ceil(h / factor) * factor, math.ceil(w / factor) * factor
    a = np.pad(a, ((0, H - h), (0, W - w)), mode="edge")
    return a.reshape(H // factor, factor, W // factor, factor).mean(axis=(1, 3))


def _sample(a, n=16_000):
    """A regular subsample of at most about ``n`` pixels, for cheap statistics."""
    step = max(1, math.ceil(math.sqrt(a.size / n)))
    return a[::step, ::step]


def _blur(a):
    """Separable [1, 2, 1] / 4 blur, edges replicated."""
    p = np.pad(a, 1, mode="edge")
    v = (p[:-2] + 2.0 * p[1:-1] + p[2:]) * 0.25
    return (v[:, :-2] + 2.0 * v[:, 1:-1] + v[:, 2:]) * 0.25


def _border(a):
    """The pixels of a thin frame around ``a`` (2 % of its size, at least 1 px).

    The frame is where the paper shows best: a digit, even a bold one
    cropped tightly, covers far less of it than of the whole picture.
    """
    k = max(1, min(a.shape) // 50)
    return np.concatenate([a[:k].ravel(), a[-k:].ravel(), a[k:-k, :k].ravel(), a[k:-k, -k:].ravel()])


#: How far from the background (corner) level a pixel must be to belong to the product.
GARMENT_TRIM = 0.05


def prepare_garment(gray, *, name="the image"):
    """Prepare a photo of one product like Fashion-MNIST's pictures were made.

    Zalando's conversion (Xiao et al. 2017, section 2): trim the edges close to
    the colour of the corners, shrink the longer side to 28 px, centre the
    shorter one in the 28x28 field, negate, grey. Unlike a digit, the whole
    shape is the object and its inner shades matter, so there is no ink
    threshold, no speck removal and no centring by mass. The paper's
    sharpening step is left out. A product on a dark background is not negated
    (it is already light on dark). Returns ``(784,)`` uint8, 0 = background.
    """
    g = _grey_plane(gray, "prepare_garment")
    paper = float(np.median([g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]]))
    box = _bbox(np.abs(g - paper) > GARMENT_TRIM)
    if box is None:
        raise ImageError(f"nothing found in {name}: the picture is one flat colour; "
                         "photograph the item on a plain background that it stands out from")
    r0, r1, c0, c1 = box
    x = g[r0:r1, c0:c1]
    if paper >= 0.5:    # on a light background: negate, as Fashion-MNIST did
        x = (paper - x) / paper
    else:               # already light on dark
        x = (x - paper) / (1.0 - paper)
    x = np.clip(x, 0.0, 1.0)
    h, w = x.shape
    scale = FIELD / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.clip(_resize(x, size, shrinking=scale < 1), 0.0, 1.0)
    field = np.zeros((FIELD, FIELD), np.float32)
    top, left = (FIELD - size[1]) // 2, (FIELD - size[0]) // 2
    field[top:top + size[1], left:left + size[0]] = small
    return np.round(field * 255).astype(np.uint8).ravel()


def _light_ink(g):
    """Return the picture with light ink on a dark background, and its blur.

    The background is the median level of the picture's border; the ink is
    whichever extreme lies farther from it, measured on a blurred copy so
    single noisy pixels do not decide.
    """
    b = _blur(g)
    paper = float(np.median(_border(g)))
    dark = paper - float(b.min())
    light = float(b.max()) - paper
    return (1.0 - g, 1.0 - b) if dark > light else (g, b)


def _background(xb):
    """Background level of a (blurred) light-ink picture: a smooth map, or a plane.

    The plane is fitted to the picture's border (robustly: ink touching the
    border is left out), so a lighting gradient across a small picture is
    removed too. On pictures big enough, a finer map: a low percentile (the
    10th) of each cell of a 12x12-ish grid, which ink raises only where it
    covers nine tenths of a cell. A grey opening of the grid (3x3 min, then
    3x3 max) removes what cells ink still raised, yet follows a lighting
    gradient without the bias a min alone would leave. The grid is
    interpolated back to pixels, and shifted so the border's median is zero.
    This removes shadows across a photographed page. The map is kept only
    when it makes the paper flatter than the plane does.
    """
    h, w = xb.shape
    flat = _border_plane(xb)
    cell = max(16, max(h, w) // 12)
    ch, cw = round(h / cell), round(w / cell)
    if min(h, w) < 96 or ch < 3 or cw < 3:
        return flat
    step = max(1, cell // 16)  # a subsample per cell is plenty for a percentile
    sub = xb[::step, ::step]
    kr, kc = sub.shape[0] // ch, sub.shape[1] // cw
    cells = sub[: ch * kr, : cw * kc].reshape(ch, kr, cw, kc).transpose(0, 2, 1, 3).reshape(ch, cw, -1)
    grid = np.percentile(cells, 10, axis=2).astype(np.float32)
    grid = _filter3(_filter3(grid, np.min), np.max)
    # Bilinear interpolation between cell centres, as two small matrices.
    rows = _interp_matrix(h, (np.arange(ch) + 0.5) * kr * step)
    cols = _interp_matrix(w, (np.arange(cw) + 0.5) * kc * step)
    bg = rows @ grid @ cols.T
    bg += float(np.median(_border(xb - bg)))
    # Keep the map only where it pays: when it flattens the paper (the
    # darkest quarter of the picture) clearly more than the plane does.
    # Where ink is thick and near the border, cells inside strokes survive
    # the opening; subtracting them would hollow the strokes for nothing.
    if _spread(_sample(xb - bg)) < 0.6 * _spread(_sample(xb - flat)) - 1e-3:
        return bg
    return flat


def _border_plane(a):
    """The plane a + b*row + c*col fitted to the border of ``a``, as an (h, w) array.

    Fitted twice: the second time without the border pixels that the first
    fit left far out (ink touching the border).
    """
    h, w = a.shape
    r = np.arange(h, dtype=np.float32)[:, None] / h - 0.5
    c = np.arange(w, dtype=np.float32)[None, :] / w - 0.5
    rr = _border(np.broadcast_to(r, (h, w)))
    cc = _border(np.broadcast_to(c, (h, w)))
    v = _border(a)
    A = np.stack([np.ones_like(rr), rr, cc], axis=1)
    keep = np.ones(v.shape, dtype=bool)
    for _ in range(2):
        coef = np.linalg.lstsq(A[keep], v[keep], rcond=None)[0]
        res = v - A @ coef
        keep = np.abs(res - np.median(res)) <= 3.0 * 1.4826 * _mad(res) + 1e-6
    return (coef[0] + coef[1] * r + coef[2] * c).astype(np.float32)


def _spread(a):
    """Spread of the lower quarter of ``a``'s values (the background's, in light-ink space)."""
    lo, q = np.percentile(a, [1, 25])
    return float(q - lo)


def _interp_matrix(n, centres):
    """(n, len(centres)) weights interpolating values at ``centres`` to 0..n-1."""
    eye = np.eye(len(centres))
    # float32 like the grid: a mixed-precision product skips BLAS (10x slower).
    return np.stack([np.interp(np.arange(n), centres, e) for e in eye], axis=1).astype(np.float32)


def _filter3(a, reduce):
    """3x3 min or max filter of a small 2-D array, edges replicated."""
    h, w = a.shape
    p = np.pad(a, 1, mode="edge")
    return reduce([p[i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


def _bbox(mask):
    """(r0, r1, c0, c1) of the True pixels, end-exclusive, or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _drop_specks(ink, grid=128):
    """Zero the ink's small connected components that lie away from the digit.

    Returns ``(ink, size)``: the cleaned ink, and the longer side of the main
    component's box in pixels (None when components were not analysed).
    Components are found on a coarse grid (max-pooled to about ``grid``
    cells a side, 8-connected) so the cost does not grow with the picture.
    Kept: the component with the most ink, those with at least 30 % of that
    anywhere, and those with at least 1 % close to the main one's box (the
    detached bar of a 5, a broken pencil stroke).
    """
    h, w = ink.shape
    f = max(1, math.ceil(max(h, w) / grid))
    if f > 1:
        H, W = math.ceil(h / f) * f, math.ceil(w / f) * f
        blocks = np.pad(ink, ((0, H - h), (0, W - w))).reshape(H // f, f, W // f, f)
        mass = blocks.sum(axis=(1, 3))
    else:
        mass = ink
    runs = _runs(mass > 0)
    if runs is None:
        return ink, None
    rr, rs, re, label = runs
    cs = np.concatenate([np.zeros((mass.shape[0], 1)), np.cumsum(mass, axis=1, dtype=np.float64)], axis=1)
    run_mass = cs[rr, re] - cs[rr, rs]
    n = int(label.max()) + 1
    comp_mass = np.bincount(label, weights=run_mass, minlength=n)
    r0 = np.full(n, np.inf); r1 = np.full(n, -np.inf)
    c0 = np.full(n, np.inf); c1 = np.full(n, -np.inf)
    np.minimum.at(r0, label, rr); np.maximum.at(r1, label, rr + 1)
    np.minimum.at(c0, label, rs); np.maximum.at(c1, label, re)
    big = int(np.argmax(comp_mass))
    margin = 0.25 * max(r1[big] - r0[big], c1[big] - c0[big])
    near = ((r0 < r1[big] + margin) & (r1 > r0[big] - margin)
            & (c0 < c1[big] + margin) & (c1 > c0[big] - margin))
    top = comp_mass[big]
    keep = (comp_mass >= 0.30 * top) | (near & (comp_mass >= 0.01 * top))
    # The main component's size in pixels (its cells' box is up to f - 1 px larger).
    a, b, c, d = (int(v) * f for v in (r0[big], r1[big], c0[big], c1[big]))
    box = _bbox(ink[a:b, c:d] > 0)
    main = max(box[1] - box[0], box[3] - box[2])
    if keep.all():
        return ink, main
    keep_cells = np.zeros(mass.shape, dtype=bool)
    for i in np.flatnonzero(keep[label]):
        keep_cells[rr[i], rs[i]:re[i]] = True
    if f > 1:
        keep_cells = np.repeat(np.repeat(keep_cells, f, axis=0), f, axis=1)[:h, :w]
    return ink * keep_cells, main


def _runs(mask, max_runs=20_000):
    """8-connected components of a boolean image, by runs and union-find.

    Returns (row, start, end, label) per horizontal run (end exclusive), or
    None when there are too many runs to bother (pure noise).
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rr, rs = np.nonzero(d == 1)
    _, re = np.nonzero(d == -1)
    n = rr.size
    if n == 0 or n > max_runs:
        return None
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    bounds = np.searchsorted(rr, np.arange(h + 1)).tolist()
    starts, ends = rs.tolist(), re.tolist()
    for r in range(h - 1):
        i, i_end = bounds[r], bounds[r + 1]
        j, j_end = bounds[r + 1], bounds[r + 2]
        while i < i_end and j < j_end:
            # Diagonal neighbours touch too (8-connectivity): hence <=.
            if starts[i] <= ends[j] and starts[j] <= ends[i]:
                a, b = find(i), find(j)
                if a != b:
                    parent[a] = b
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    roots = np.array([find(i) for i in range(n)])
    _, label = np.unique(roots, return_inverse=True)
    return rr, rs, re, label.ravel()


def _resize(a, size, shrinking):
    """Resize a float array to ``size`` = (width, height) with Pillow."""
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    out = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F").resize(size, method)
    return np.asarray(out, dtype=np.float32)


def _stroke_width(a):
    """Mean stroke width in pixels, as 2 * area / perimeter of the ink > 0.5."""
    b = a > 0.5
    area = int(b.sum())
    if area == 0:
        return 0.0
    p = np.pad(b, 1)
    perimeter = int((p[1:] != p[:-1]).sum() + (p[:, 1:] != p[:, :-1]).sum())
    return 2.0 * area / perimeter


def _dilate(a, radius):
    """Grey-level dilation with an octagon of the given radius (max filter)."""
    for step in range(radius):
        p = np.pad(a, 1)
        if step % 2 == 0:  # a 3x3 square ...
            v = np.maximum(np.maximum(p[:-2], p[1:-1]), p[2:])
            a = np.maximum(np.maximum(v[:, :-2], v[:, 1:-1]), v[:, 2:])
        else:  # ... alternating with a cross, so corners stay round
            c = p[1:-1, 1:-1]
            a = np.max([c, p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]], axis=0)
    return a


def _normalise_size(crop):
    """Cropped ink -> the digit with its longer side ``BOX`` px, max 1.

    The crop is first brought to ``FINE`` (4x the box) on its longer side,
    where stroke width is measured and hairlines are thickened, then
    area-averaged down by 4 so the edges come out grey like MNIST's.
    """
    h, w = crop.shape
    longer = max(h, w)
    fine_size = (max(1, round(w * FINE / longer)), max(1, round(h * FINE / longer)))
    fine = _resize(crop, fine_size, shrinking=longer > FINE)

    width = _stroke_width(fine) / (FINE / BOX)  # in final pixels
    if 0 < width < MIN_STROKE_WIDTH:
        radius = max(1, round((STROKE_WIDTH - width) * (FINE / BOX) / 2))
        fine = _dilate(np.pad(fine, radius), radius)
        box = _bbox(fine > 0)
        crop = fine[box[0]:box[1], box[2]:box[3]]
    elif longer > FINE:
        crop = fine  # already area-averaged part of the way: finish from it
    # else: a small crop goes to 20 px in one step (no double resampling)

    h, w = crop.shape
    longer = max(h, w)
    size = (max(1, round(w * BOX / longer)), max(1, round(h * BOX / longer)))
    digit = _resize(crop, size, shrinking=longer >= BOX)
    top = float(digit.max())
    return np.clip(digit / top, 0.0, 1.0) if top > 0 else digit


def _centre(digit):
    """Place the digit in the 28x28 field with its centre of mass at (14, 14)."""
    h, w = digit.shape
    total = float(digit.sum())
    rows = float((digit.sum(axis=1) * np.arange(h)).sum()) / total
    cols = float((digit.sum(axis=0) * np.arange(w)).sum()) / total
    top = min(max(round(FIELD / 2 - rows), 0), FIELD - h)
    left = min(max(round(FIELD / 2 - cols), 0), FIELD - w)
    out = np.zeros((FIELD, FIELD), dtype=np.uint8)
    out[top:top + h, left:left + w] = np.rint(digit * 255.0).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------
# Showing the model input
# ---------------------------------------------------------------------------

_RAMP = " .:-=+*#%@"


def ascii_art(x784):
    """The 28x28 model input as 28 lines of text (two characters per pixel).

    ``x784``: 784 values, uint8 0..255 or floats 0..1 (0 = background).
    """
    a = np.asarray(x784).reshape(FIELD, FIELD)
    a = a.astype(np.float64) / 255.0 if a.dtype.kind in "ui" or a.max() > 1.0 else a.astype(np.float64)
    idx = np.clip((a * (len(_RAMP) - 1) + 0.5).astype(int), 0, len(_RAMP) - 1)
    return "\n".join("".join(_RAMP[i] * 2 for i in row).rstrip() for row in idx)
