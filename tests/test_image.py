"""Tests for bpcli.image: a person's picture of a digit -> MNIST's 28x28 input.

No trained model exists in the tests, so a prepared picture is judged by how
close it comes to the MNIST digit it was made from: the best correlation over
one-pixel shifts (MNIST centred with whole-pixel shifts, and a picture's
centre of mass can round the other way), plus MNIST's geometry (longer side
20 px, centre of mass at (14, 14)). Pictures are made from real MNIST test
digits when ../shared/mnist (or $BP_TEST_MNIST) is there, and from digits
drawn with Pillow otherwise.
"""

import gzip
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from bpcli import image
from bpcli.errors import ImageError

MNIST_DIR = Path(os.environ.get("BP_TEST_MNIST")
                 or Path(__file__).resolve().parents[2] / "shared" / "mnist")
N_DIGITS = 12  # MNIST test digits per picture kind


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist():
    """The first N_DIGITS MNIST test digits as (N, 28, 28) uint8."""
    path = MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip(f"MNIST test images not found at {path} (set BP_TEST_MNIST to the folder)")
    with gzip.open(path) as f:
        raw = f.read(16 + N_DIGITS * 784)
    return np.frombuffer(raw, np.uint8, offset=16).reshape(N_DIGITS, 28, 28)


def corr(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def shift_corr(prepared, original):
    """Best correlation of the prepared 28x28 with the original over 1-px shifts."""
    p = np.asarray(prepared).reshape(28, 28)
    return max(corr(np.roll(p, (dy, dx), axis=(0, 1)), original)
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def assert_mnist_geometry(x784):
    """MNIST's rule: longer side of the ink's box 20 px, centre of mass at (14, 14)."""
    assert x784.shape == (784,) and x784.dtype == np.uint8
    a = x784.reshape(28, 28).astype(np.float64)
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    assert max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == 20
    m = a.sum()
    com = ((a.sum(axis=1) * np.arange(28)).sum() / m, (a.sum(axis=0) * np.arange(28)).sum() / m)
    assert abs(com[0] - 14) <= 1.0 and abs(com[1] - 14) <= 1.0, com
    assert a.max() == 255


def upscale(x28, s):
    """A 28x28 white-on-black digit enlarged s times (a bigger, smooth drawing)."""
    big = Image.fromarray(x28).resize((28 * s, 28 * s), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(big, np.float32) / 255.0, 0.0, 1.0)


def photograph(ink, rng, *, margin=(1.3, 2.2), paper=(0.7, 0.95), pen=(0.05, 0.3),
               noise=(0.01, 0.04), gradient=0.15):
    """Dark ink on toned, noisy, unevenly lit paper, off-centre on a larger page.

    ``ink``: coverage in [0, 1]. Returns grey levels in [0, 1] (1 = white).
    """
    h, w = ink.shape
    H, W = int(h * rng.uniform(*margin)), int(w * rng.uniform(*margin))
    page = np.zeros((H, W), np.float32)
    top, left = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
    page[top:top + h, left:left + w] = ink
    p, q = rng.uniform(*paper), rng.uniform(*pen)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:H, 0:W]
    light = 1.0 - gradient * (np.cos(angle) * xx / W + np.sin(angle) * yy / H + 1) / 2
    g = (p - (p - q) * page) * light + rng.normal(0, rng.uniform(*noise), (H, W))
    return np.clip(g, 0.0, 1.0)


def u8(g):
    return np.rint(np.clip(g, 0, 1) * 255).astype(np.uint8)


def save(im, path, **kw):
    if Path(path).suffix == ".png":
        kw.setdefault("compress_level", 1)  # noisy pictures compress slowly and poorly
    im.save(path, **kw)
    return path


# Each builder makes one kind of picture from a 28x28 MNIST digit.

def build_inverted(x, rng, d):
    return save(Image.fromarray(255 - x), d / "inverted.png")


def build_scaled(x, rng, d):
    return save(Image.fromarray(u8(upscale(x, int(rng.integers(5, 13))))), d / "scaled.png")


def build_page(x, rng, d):
    g = photograph(upscale(x, int(rng.integers(5, 13))), rng, margin=(1.5, 3.0),
                   paper=(1, 1), pen=(0, 0), noise=(0, 0), gradient=0)
    return save(Image.fromarray(u8(g)), d / "page.png")


def build_paper_noise(x, rng, d):
    return save(Image.fromarray(u8(photograph(upscale(x, int(rng.integers(5, 13))), rng))),
                d / "paper.png")


def build_jpeg(x, rng, d):
    g = photograph(upscale(x, int(rng.integers(5, 13))), rng)
    rgb = np.stack([g, g * 0.97, g * 0.9], axis=-1)  # warm paper, blue-black ink
    return save(Image.fromarray(u8(rgb)), d / "photo.jpg", quality=int(rng.integers(60, 95)))


def build_rgba_transparent(x, rng, d):
    ink = upscale(x, int(rng.integers(5, 13)))
    rgba = np.zeros(ink.shape + (4,), np.uint8)
    rgba[..., :3] = (20, 20, 90)  # dark blue ink, alpha = coverage
    rgba[..., 3] = u8(ink)
    return save(Image.fromarray(rgba), d / "transparent.png")


def build_rgba_white_ink(x, rng, d):
    ink = upscale(x, int(rng.integers(5, 13)))
    rgba = np.full(ink.shape + (4,), 255, np.uint8)  # white ink on a transparent canvas
    rgba[..., 3] = u8(ink)
    return save(Image.fromarray(rgba), d / "white_ink.png")


def build_rgba_opaque(x, rng, d):
    g = u8(photograph(upscale(x, int(rng.integers(5, 13))), rng))
    return save(Image.fromarray(g).convert("RGBA"), d / "opaque.png")


def build_palette(x, rng, d):
    g = u8(photograph(upscale(x, int(rng.integers(5, 13))), rng, noise=(0.01, 0.02)))
    im = Image.fromarray(g).convert("RGB").quantize(colors=16)
    assert im.mode == "P"
    return save(im, d / "palette.png")


def build_palette_transparency(x, rng, d):
    g = upscale(x, int(rng.integers(5, 13)))
    idx = np.where(g > 0.3, 1, 0).astype(np.uint8)  # 0 = transparent, 1 = black ink
    im = Image.fromarray(idx, mode="P")
    im.putpalette([255, 0, 0, 0, 0, 0])  # the transparent colour is a red that must not show
    return save(im, d / "transparency.gif", transparency=0)


def build_i16(x, rng, d):
    g = photograph(upscale(x, int(rng.integers(5, 13))), rng)
    im = Image.fromarray(np.rint(g * 65535).astype(np.uint16))
    assert im.mode.startswith("I;16")
    return save(im, d / "sixteen.png")


def build_float_tiff(x, rng, d):
    g = photograph(upscale(x, 6), rng)
    return save(Image.fromarray(g.astype(np.float32), mode="F"), d / "float.tif")


def build_float_tiff_any_range(x, rng, d):
    g = photograph(upscale(x, 6), rng) * 1000.0 - 200.0  # a scientific camera's float levels
    return save(Image.fromarray(g.astype(np.float32), mode="F"), d / "float_range.tif")


def build_int32_tiff(x, rng, d):
    g = photograph(upscale(x, 6), rng)
    im = Image.fromarray(np.rint(g * 4095).astype(np.int32))  # 12-bit sensor levels in mode I
    assert im.mode == "I"
    return save(im, d / "int32.tif")


def build_la_png(x, rng, d):
    g = u8(photograph(upscale(x, 6), rng))
    return save(Image.fromarray(g).convert("LA"), d / "grey_alpha.png")


def build_cmyk_jpeg(x, rng, d):
    g = u8(photograph(upscale(x, int(rng.integers(5, 13))), rng))
    im = Image.fromarray(g).convert("RGB").convert("CMYK")
    return save(im, d / "cmyk.jpg", quality=90)


def build_animated_gif(x, rng, d):
    first = Image.fromarray(255 - u8(upscale(x, 6))).convert("P")
    other = np.full((168, 168), 255, np.uint8)
    other[20:150, 20:40] = 0  # a different picture in frame 2: must be ignored
    second = Image.fromarray(other).convert("P")
    return save(first, d / "animated.gif", save_all=True, append_images=[second],
                duration=100, loop=0)


def build_exif_rotated(x, rng, d):
    g = u8(photograph(upscale(x, int(rng.integers(5, 13))), rng))
    # Orientation 6: the camera stored the picture turned a quarter left;
    # a viewer turns it back a quarter right.
    stored = Image.fromarray(g).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(stored.convert("RGB"), d / "rotated.jpg", quality=90, exif=exif.tobytes())


def build_chalkboard(x, rng, d):
    ink = upscale(x, int(rng.integers(5, 13)))
    H, W = int(ink.shape[0] * 1.8), int(ink.shape[1] * 2.0)
    board = np.zeros((H, W), np.float32)
    top, left = rng.integers(0, H - ink.shape[0] + 1), rng.integers(0, W - ink.shape[1] + 1)
    board[top:top + ink.shape[0], left:left + ink.shape[1]] = ink * rng.uniform(0.6, 0.9)
    base = np.array([0.16, 0.25, 0.2])  # dark green slate
    rgb = base + (board + rng.normal(0, 0.03, (H, W)).astype(np.float32))[..., None]
    return save(Image.fromarray(u8(rgb)), d / "chalk.png")


def build_bilevel(x, rng, d):
    g = photograph(upscale(x, 8), rng, paper=(0.9, 0.9), pen=(0.1, 0.1), noise=(0, 0), gradient=0)
    return save(Image.fromarray(u8(g)).convert("1"), d / "bilevel.png")


def build_formats(fmt, suffix, **kw):
    def build(x, rng, d):
        g = u8(photograph(upscale(x, 6), rng))
        return save(Image.fromarray(g).convert("RGB"), d / f"digit.{suffix}", format=fmt, **kw)
    build.__name__ = f"build_{suffix}"
    return build


BUILDERS = {
    "inverted": build_inverted,
    "scaled": build_scaled,
    "page": build_page,
    "paper_noise": build_paper_noise,
    "jpeg": build_jpeg,
    "rgba_transparent": build_rgba_transparent,
    "rgba_white_ink": build_rgba_white_ink,
    "rgba_opaque": build_rgba_opaque,
    "palette": build_palette,
    "palette_transparency": build_palette_transparency,
    "i16": build_i16,
    "float_tiff": build_float_tiff,
    "float_tiff_any_range": build_float_tiff_any_range,
    "int32_tiff": build_int32_tiff,
    "la_png": build_la_png,
    "cmyk_jpeg": build_cmyk_jpeg,
    "animated_gif": build_animated_gif,
    "exif_rotated": build_exif_rotated,
    "chalkboard": build_chalkboard,
    "bilevel": build_bilevel,
    "bmp": build_formats("BMP", "bmp"),
    "tiff_lzw": build_formats("TIFF", "tif", compression="tiff_lzw"),
    "webp": build_formats("WEBP", "webp", lossless=True),
}


# ---------------------------------------------------------------------------
# MNIST digits in many disguises come back close to themselves
# ---------------------------------------------------------------------------

def test_prepare_is_nearly_idempotent_on_mnist(mnist):
    scores = [shift_corr(image.prepare(x), x) for x in mnist]
    assert min(scores) > 0.95, scores
    assert np.median(scores) > 0.98, scores


def test_prepare_accepts_floats_and_uint8_alike(mnist):
    x = mnist[0]
    assert np.array_equal(image.prepare(x), image.prepare(x.astype(np.float32) / 255))


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_pictures_of_mnist_digits_come_back_like_mnist(kind, mnist, tmp_path):
    rng = np.random.default_rng(sorted(BUILDERS).index(kind))
    scores = []
    for i, x in enumerate(mnist):
        d = tmp_path / str(i)
        d.mkdir()
        path = BUILDERS[kind](x, rng, d)
        out = image.load_digit(path)
        assert_mnist_geometry(out)
        scores.append(shift_corr(out, x))
    assert min(scores) > 0.8, [round(s, 3) for s in scores]
    assert np.mean(scores) > 0.9, [round(s, 3) for s in scores]


def test_isolated_specks_do_not_move_the_digit(mnist):
    rng = np.random.default_rng(5)
    for x in mnist[:6]:
        g = photograph(upscale(x, 8), rng, margin=(2.0, 2.0), noise=(0.01, 0.01), gradient=0)
        clean = image.prepare(g)
        specked = g.copy()
        for _ in range(15):  # crumbs and dust: dark dots of 1-4 px all over the page
            r, c = rng.integers(0, g.shape[0] - 4), rng.integers(0, g.shape[1] - 4)
            s = int(rng.integers(1, 5))
            specked[r:r + s, c:c + s] = 0.05
        assert corr(image.prepare(specked), clean) > 0.97


# ---------------------------------------------------------------------------
# Synthetic digits (no MNIST needed)
# ---------------------------------------------------------------------------

STROKES = {
    # polylines on a 100x140 canvas, (x, y)
    7: [[(15, 15), (85, 15), (40, 130)], [(35, 72), (70, 72)]],
    4: [[(65, 130), (65, 10), (10, 95), (90, 95)]],
    1: [[(35, 30), (55, 10), (55, 130)]],
    0: [[(50 + 38 * np.sin(t), 70 - 58 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 41)]],
}


def draw_digit(digit, scale=4, width=12):
    """Light strokes on black, the polyline digit enlarged ``scale`` times."""
    im = Image.new("L", (100 * scale, 140 * scale), 0)
    draw = ImageDraw.Draw(im)
    for line in STROKES[digit]:
        pts = [(x * scale, y * scale) for x, y in line]
        draw.line(pts, fill=255, width=width * scale, joint="curve")
        for px, py in pts:  # round caps
            r = width * scale / 2
            draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
    return np.asarray(im, np.float32) / 255.0


@pytest.mark.parametrize("digit", sorted(STROKES))
def test_synthetic_digit_geometry_and_polarity(digit):
    ink = draw_digit(digit)
    light = image.prepare(ink)
    assert_mnist_geometry(light)
    dark = image.prepare(1.0 - ink)  # dark on white paper gives the same input
    assert corr(light, dark) > 0.98


@pytest.mark.parametrize("digit", sorted(STROKES))
def test_synthetic_digit_photographed(digit):
    rng = np.random.default_rng(digit)
    reference = image.prepare(draw_digit(digit))
    for _ in range(3):
        g = photograph(draw_digit(digit), rng, gradient=0.3)
        assert shift_corr(image.prepare(g), reference.reshape(28, 28)) > 0.93


def test_bold_digit_cropped_tightly():
    # A marker-thick 0 cropped to its ink: ink covers more than half the
    # picture, so only the border tells paper from ink.
    ink = np.pad(draw_digit(0, scale=2, width=26), 20)
    rows, cols = np.flatnonzero(ink.max(axis=1) > 0.5), np.flatnonzero(ink.max(axis=0) > 0.5)
    tight = ink[rows[0] - 2:rows[-1] + 3, cols[0] - 2:cols[-1] + 3]
    assert (tight > 0.5).mean() > 0.5
    on_page = np.pad(tight, 150)
    assert corr(image.prepare(1 - tight), image.prepare(1 - on_page)) > 0.97
    assert corr(image.prepare(tight), image.prepare(on_page)) > 0.97


def test_uneven_lighting_and_a_shadow_are_removed():
    ink = draw_digit(7)
    reference = image.prepare(ink)
    H, W = 900, 800
    page = np.zeros((H, W), np.float32)
    page[300:300 + ink.shape[0], 250:250 + ink.shape[1]] = ink
    yy, xx = np.mgrid[0:H, 0:W]
    light = 0.55 + 0.4 * xx / W  # strong left-to-right falloff
    light *= 1.0 - 0.3 / (1.0 + np.exp((xx - 150) / 25.0))  # a hand's soft shadow at the left
    g = (0.95 - 0.8 * page) * light
    assert shift_corr(image.prepare(g), reference) > 0.95


def test_hairline_strokes_are_thickened_like_mnist():
    thin = draw_digit(4, scale=8, width=2)  # a fine pen on a big photo
    out = image.prepare(thin).reshape(28, 28) / 255.0
    assert image._stroke_width(out) >= 1.0  # MNIST's median is 2; 5 % are below 1.3
    assert out.max() == 1.0


def test_large_photo_is_shrunk_early_and_still_found(tmp_path):
    ink = draw_digit(7, scale=8)  # 800x1120 digit on a 4000x3000 photo
    rng = np.random.default_rng(1)
    page = np.zeros((3000, 4000), np.float32)
    page[900:900 + ink.shape[0], 1700:1700 + ink.shape[1]] = ink
    g = (0.85 - 0.7 * page) + rng.normal(0, 0.02, page.shape).astype(np.float32)
    path = save(Image.fromarray(u8(g)).convert("RGB"), tmp_path / "photo.jpg", quality=85)
    gray = image.read_gray(path)[0]
    assert max(gray.shape) <= image.WORK_SIZE
    out = image.load_digit(path)
    assert shift_corr(out, image.prepare(draw_digit(7))) > 0.93


def test_load_digit_takes_str_and_path(tmp_path):
    path = save(Image.fromarray(u8(1 - draw_digit(1))), tmp_path / "one.png")
    assert np.array_equal(image.load_digit(path), image.load_digit(str(path)))


# ---------------------------------------------------------------------------
# Nothing to see: blank pictures
# ---------------------------------------------------------------------------

def _blank_pictures(tmp_path):
    rng = np.random.default_rng(0)
    yield "white", Image.new("L", (300, 200), 255)
    yield "black", Image.new("RGB", (300, 200), 0)
    yield "grey", Image.new("L", (64, 64), 128)
    yield "paper", Image.fromarray(u8(0.85 + rng.normal(0, 0.03, (400, 300))))
    yield "gradient", Image.fromarray(u8(np.tile(np.linspace(0.5, 0.9, 400), (300, 1))))
    yield "transparent", Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    yield "tiny", Image.new("L", (1, 1), 0)
    dust = np.full((300, 400), 230, np.uint8)
    dust[100:102, 50:52] = dust[250, 300] = dust[20:23, 380:383] = 30
    yield "dust", Image.fromarray(dust)
    yield "sixteen", Image.fromarray((1000 + rng.normal(0, 3, (200, 200))).astype(np.uint16))
    hot = np.full((200, 200), 1000, np.uint16)
    hot[50, 60] = 60000
    yield "hot_pixel", Image.fromarray(hot)


@pytest.mark.parametrize("which", ["white", "black", "grey", "paper", "gradient", "transparent", "tiny",
                                   "dust", "sixteen", "hot_pixel"])
def test_blank_picture_says_no_digit_found(which, tmp_path):
    im = dict(_blank_pictures(tmp_path))[which]
    path = save(im, tmp_path / f"{which}.png")
    with pytest.raises(ImageError, match="no digit found in .*" + which + r"\.png"):
        image.load_digit(path)


# ---------------------------------------------------------------------------
# Bad files: every one an ImageError naming the file, one line
# ---------------------------------------------------------------------------

def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width, height):
    """A PNG whose header claims the given size (its pixel data is tiny)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 10)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def _valid_png():
    buf = io.BytesIO()
    Image.fromarray(u8(1 - draw_digit(7))).save(buf, "PNG")
    return buf.getvalue()


BAD_FILES = {
    "text.png": (b"this is not an image\n" * 20, "not an image"),
    "empty.png": (b"", "empty"),
    "truncated.png": (None, "damaged or truncated"),
    "huge.png": (_png_claiming(50_000, 50_000), "megapixel"),
    "wide.png": (_png_claiming(2_000_000, 30), "megapixel"),
    "zero.bmp": (b"BM" + b"\0" * 60, "damaged or truncated"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_an_image_error_naming_it(name, tmp_path):
    data, hint = BAD_FILES[name]
    if data is None:
        full = _valid_png()
        data = full[: len(full) * 2 // 3]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError) as info:
        image.load_digit(path)
    message = str(info.value)
    assert str(path) in message and hint in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="not found; give the path of a picture file") as info:
        image.load_digit(path)
    assert str(path) in str(info.value)


# Files that are no picture at all: each one line naming what the path is.
# The FIFO test runs under a timeout so that a reader that blocks on it
# fails the test instead of hanging the suite.

def _load_within(path, seconds=20):
    """load_digit(path) in a worker thread; the ImageError message, or a failure if it blocks."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(image.load_digit, path)
    try:
        with pytest.raises(ImageError) as info:
            future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:  # pragma: no cover - the failure being guarded
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # unblock the reader
        pytest.fail(f"reading {path} blocked")
    finally:
        pool.shutdown(wait=False)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    message = _load_within(fifo)
    assert message.startswith(f"image {fifo} is a named pipe (FIFO), not a regular file;"), message


def test_dev_zero_is_a_device_not_an_empty_file():
    message = _load_within("/dev/zero")
    assert message.startswith("image /dev/zero is a character device, not a regular file;"), message


def test_a_symlink_loop_is_named_as_such(tmp_path):
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    message = _load_within(tmp_path / "a.png")
    assert message.startswith(f"image {tmp_path / 'a.png'} is a symbolic link that loops back on itself"), message


@pytest.mark.parametrize("content", [b"not an image", b"", None])
def test_a_newline_in_the_name_gives_one_line(content, tmp_path):
    path = tmp_path / "two\nlines.png"
    if content is not None:  # None: the file does not exist
        path.write_bytes(content)
    message = _load_within(path)
    assert f"{tmp_path}/two\\nlines.png" in message, message


def test_a_blank_picture_with_a_newline_in_its_name_gives_one_line(tmp_path):
    path = save(Image.new("L", (64, 64), 255), tmp_path / "blank\n.png")
    message = _load_within(path)
    assert message.startswith(f"no digit found in {tmp_path}/blank\\n.png:"), message


def test_a_file_over_the_size_cap_is_refused_before_reading(tmp_path):
    path = tmp_path / "sparse.png"
    with open(path, "wb") as f:
        f.write(_valid_png())
        f.truncate(image.MAX_FILE_BYTES + 1)  # sparse: no real bytes on disk
    message = _load_within(path)
    assert message.startswith(f"image {path} is {image.MAX_FILE_BYTES + 1:,} bytes, over bp's limit of "
                              f"{image.MAX_FILE_BYTES:,}; give the path of a picture file"), message


def test_the_size_cap_lets_a_large_scan_through():
    # A page scanned at 600 dpi (A4, 4960x7016 px) saved as uncompressed RGB,
    # and the largest 16-bit RGB picture the pixel limit allows.
    assert 4960 * 7016 * 3 < image.MAX_FILE_BYTES
    assert image.MAX_PIXELS * 6 < image.MAX_FILE_BYTES


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="folder") as info:
        image.load_digit(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_size_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_claiming(8000, 8000))  # under Pillow's own limit, over bp's

    def no_load(self, *a, **kw):  # pragma: no cover - failing is the point
        raise AssertionError("decoded a picture that was too large")

    monkeypatch.setattr(Image.Image, "load", no_load)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_load)
    with pytest.raises(ImageError, match="64 megapixels"):
        image.load_digit(path)


@pytest.mark.parametrize("limit", [40_000, 12_000])  # warning zone, then error zone
def test_pillow_decompression_bomb_becomes_image_error(limit, tmp_path, monkeypatch):
    path = save(Image.new("L", (200, 200), 255), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit - 1)
    with pytest.raises(ImageError, match="too large") as info:
        image.load_digit(path)
    assert str(path) in str(info.value)


def test_broken_tiff_prints_nothing(tmp_path, capfd):
    # libtiff writes its complaints to file descriptor 2 itself; bp prints one line.
    buf = io.BytesIO()
    Image.fromarray(u8(1 - draw_digit(7))).save(buf, "TIFF", compression="tiff_lzw")
    data = bytearray(buf.getvalue())
    data[8:len(data) // 2] = b"\xff" * (len(data) // 2 - 8)  # garble the LZW strip, keep the header
    path = tmp_path / "broken.tif"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="broken.tif"):
        image.load_digit(path)
    assert capfd.readouterr().err == ""


def test_eps_is_refused_without_running_ghostscript(tmp_path):
    path = tmp_path / "digit.eps"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="EPS is not supported") as info:
        image.load_digit(path)
    assert str(path) in str(info.value)


# Random bytes, and broken real images: only ImageError may ever come out.

_SEEDS = []


def _seed_files():
    if not _SEEDS:
        g = Image.fromarray(u8(1 - draw_digit(7, scale=1)))
        for fmt, mode, kw in [("PNG", "L", {}), ("PNG", "RGBA", {}), ("GIF", "P", {}),
                              ("JPEG", "RGB", {}), ("JPEG", "CMYK", {}), ("BMP", "RGB", {}),
                              ("TIFF", "L", {"compression": "tiff_lzw"}), ("WEBP", "RGB", {}),
                              ("TIFF", "F", {}), ("ICO", "RGBA", {}), ("PPM", "L", {})]:
            buf = io.BytesIO()
            g.convert(mode).save(buf, fmt, **kw)
            _SEEDS.append(buf.getvalue())
    return _SEEDS


def _load_only_image_error(path, data):
    path.write_bytes(data)
    try:
        out = image.load_digit(path)
    except ImageError as err:
        assert str(path) in str(err) and "\n" not in str(err)
    else:
        assert out.shape == (784,) and out.dtype == np.uint8


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=4096))
def test_random_bytes_only_raise_image_error(data, tmp_path_factory):
    _load_only_image_error(tmp_path_factory.mktemp("fuzz") / "random.png", data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10), edits=st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255), st.sampled_from("set cut end")),
    min_size=1, max_size=8))
def test_broken_real_images_only_raise_image_error(seed, edits, tmp_path_factory):
    data = bytearray(_seed_files()[seed])
    for where, value, how in edits:
        if not data:
            break
        i = int(where * len(data))
        if how == "set":
            data[i] = value
        elif how == "cut":
            del data[i:i + value // 8 + 1]
        else:
            del data[i:]
    _load_only_image_error(tmp_path_factory.mktemp("fuzz") / "broken.img", bytes(data))


@settings(max_examples=150, deadline=None)
@given(shape=st.tuples(st.integers(1, 300), st.integers(1, 300)), seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["noise", "blobs", "constant", "binary"]))
def test_prepare_on_any_array_returns_input_or_image_error(shape, seed, kind):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        g = rng.random(shape)
    elif kind == "constant":
        g = np.full(shape, rng.random())
    elif kind == "binary":
        g = (rng.random(shape) < rng.random()).astype(np.float64)
    else:  # a few rectangles of ink on a random background
        g = np.full(shape, rng.random())
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
            g[r:r + rng.integers(1, 50), c:c + rng.integers(1, 50)] = rng.random()
    try:
        out = image.prepare(g)
    except ImageError as err:
        assert str(err).startswith("no digit found")
    else:
        assert out.shape == (784,) and out.dtype == np.uint8 and out.max() == 255


# ---------------------------------------------------------------------------
# ascii_art
# ---------------------------------------------------------------------------

def test_ascii_art_shows_the_model_input():
    x = np.zeros(784, np.uint8)
    x[14 * 28 + 3] = 255
    x[5 * 28 + 10] = 128
    art = image.ascii_art(x)
    lines = art.split("\n")
    assert len(lines) == 28
    assert lines[14] == " " * 6 + "@@"
    assert lines[5].strip() in ("==", "++", "--")
    assert image.ascii_art(x.astype(np.float32) / 255) == art


def test_ascii_art_of_a_prepared_digit_has_ink_in_the_middle():
    art = image.ascii_art(image.prepare(draw_digit(1))).split("\n")
    assert all(line.strip() == "" for line in art[:2] + art[-2:])
    assert sum("@" in line for line in art) >= 15
