"""Generate evaluation sets for ``bp predict``: digits as people photograph them.

    python benchmarks/predict_sets.py OUT_DIR [--n 1000] [--seed 0] [--mnist DIR]

writes three sets, each a folder with its images and a ``labels.csv``
(``file,label``), for ``benchmarks/predict_accuracy.py`` to score a
checkpoint on:

``photo/``
    The first N MNIST test digits "photographed": dark ink (black or blue)
    on toned paper, enlarged 5-12x, off-centre on a larger page, with uneven
    light, a little camera blur and sensor noise; saved as JPEG, PNG, and
    PNG with alpha (some opaque, some a transparent canvas with only the ink).
``typed/``
    Digits 0-9 typed in the TrueType/OpenType fonts found on the machine
    (``/usr/share/fonts``, ``/usr/local/share/fonts``, ``~/.fonts`` and
    matplotlib's, if installed), at several sizes and a few degrees of
    rotation, dark on light. Common and handwriting-like faces are preferred
    when present (DejaVu, Liberation, FreeFont, Comic Neue, URW Z003
    Chancery, URW Gothic ...); ``fonts.txt`` lists those used. More fonts on
    Debian/Ubuntu: ``apt-get install fonts-dejavu fonts-liberation
    fonts-freefont-ttf fonts-comic-neue fonts-urw-base35``.
``chalk/``
    White chalk on a blackboard: grainy light strokes (MNIST digits, and a
    few typed ones) on a dark green or grey, smudged, noisy board.

MNIST is read from ``--mnist`` (default: ``$BP_TEST_MNIST``, else
``../shared/mnist`` beside the repository, else the repository's ``data/``):
the gzipped IDX files, or the plain ones ``bp download`` leaves. Everything is seeded: the same command makes the same files.
"""

import argparse
import csv
import gzip
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]

FONT_DIRS = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts",
             Path.home() / ".local/share/fonts"]
# Preferred faces, by file name stem, in order: common text faces first,
# then the handwriting-like ones that look most like a person's digits.
PREFERRED_FONTS = [
    "DejaVuSans", "DejaVuSerif", "DejaVuSans-Bold", "DejaVuSansMono",
    "ComicNeue-Regular", "ComicNeue-Bold", "ComicNeue-Italic", "Z003-MediumItalic",
    "LiberationSans-Regular", "LiberationSerif-Regular", "LiberationMono-Regular",
    "FreeSerifItalic", "URWGothic-Book", "P052-Roman", "URWBookman-Light", "NimbusSans-Regular",
]
MAX_FONTS = 16
FONT_SIZES = (28, 72, 180)
ANGLES = (-6, 0, 6)


# ---------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------

def find_mnist(explicit=None):
    candidates = [explicit, os.environ.get("BP_TEST_MNIST"), REPO.parent / "shared" / "mnist",
                  REPO / "data"]
    for c in candidates:
        if c and any((Path(c) / f"t10k-images-idx3-ubyte{ext}").exists() for ext in (".gz", "")):
            return Path(c)
    sys.exit("MNIST test files not found: pass --mnist DIR (a folder with t10k-images-idx3-ubyte.gz "
             "and t10k-labels-idx1-ubyte.gz), or run 'bp download' first")


def read_mnist_test(folder, n):
    """The first n test digits (n, 28, 28) uint8 and their labels (n,)."""
    if (folder / "t10k-images-idx3-ubyte").exists():  # bp's own cache, as bp download leaves it
        from bpcli.data import read_idx

        X, y = read_idx(folder / "t10k-images-idx3-ubyte"), read_idx(folder / "t10k-labels-idx1-ubyte")
        return X[:n].reshape(-1, 28, 28), y[:n]
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
        X = np.frombuffer(f.read(16 + 784 * n), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(8 + n), np.uint8, offset=8)
    return X, y


# ---------------------------------------------------------------------------
# Picture making (arrays in [0, 1])
# ---------------------------------------------------------------------------

def enlarge(x28, s):
    """A 28x28 white-on-black digit enlarged s times: ink coverage in [0, 1]."""
    big = Image.fromarray(x28).resize((28 * s, 28 * s), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(big, np.float32) / 255.0, 0.0, 1.0)


def place(ink, rng, margin=(1.3, 2.5)):
    """Put ``ink`` somewhere on a larger empty page."""
    h, w = ink.shape
    H, W = int(h * rng.uniform(*margin)), int(w * rng.uniform(*margin))
    page = np.zeros((H, W), np.float32)
    top, left = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
    page[top:top + h, left:left + w] = ink
    return page


def lighting(shape, rng, strength):
    """A smooth light falloff across the page: 1 at the bright side."""
    H, W = shape
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    ramp = (np.cos(angle) * xx / W + np.sin(angle) * yy / H + 1) / 2
    return 1.0 - strength * ramp


def blur(a, sigma):
    """Separable Gaussian blur (edges replicated); Pillow's works on 8-bit images only."""
    if sigma <= 0.05:
        return a.astype(np.float32)
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    p = np.pad(a.astype(np.float32), r, mode="edge")
    h, w = a.shape
    v = sum(k[i] * p[i:i + h, :] for i in range(2 * r + 1))
    return sum(k[i] * v[:, i:i + w] for i in range(2 * r + 1))


def ink_on_paper(page, rng, *, colour=None):
    """Dark ink on toned, unevenly lit, noisy paper: RGB float (H, W, 3)."""
    paper = np.array([0.93, 0.91, 0.86]) * rng.uniform(0.8, 1.05)  # warm white to grey
    if colour is None:
        colour = [np.array([0.08, 0.08, 0.1]), np.array([0.1, 0.15, 0.45])][rng.integers(0, 2)]
    coverage = blur(page, rng.uniform(0, 1.5)) * rng.uniform(0.75, 1.0)
    rgb = paper + (colour - paper) * coverage[..., None]
    rgb = rgb * lighting(page.shape, rng, rng.uniform(0, 0.3))[..., None]
    rgb = rgb + rng.normal(0, rng.uniform(0.005, 0.04), page.shape)[..., None]
    return np.clip(rgb, 0, 1)


def to_u8(a):
    return np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8)


def save_mixed(rgb, coverage, rng, stem, folder):
    """Save as JPEG (half), PNG (3 in 10) or PNG with alpha (1 in 5). Returns the file name."""
    r = rng.random()
    if r < 0.5:
        name = f"{stem}.jpg"
        Image.fromarray(to_u8(rgb)).save(folder / name, quality=int(rng.integers(60, 95)))
    elif r < 0.8:
        name = f"{stem}.png"
        Image.fromarray(to_u8(rgb)).save(folder / name)
    else:
        name = f"{stem}.png"
        rgba = np.empty(rgb.shape[:2] + (4,), np.uint8)
        if rng.random() < 0.5:  # an opaque photo that happens to have an alpha channel
            rgba[..., :3], rgba[..., 3] = to_u8(rgb), 255
        else:  # a drawing app's export: the ink alone on a transparent canvas
            rgba[..., :3] = to_u8(np.array([0.05, 0.05, 0.1]))
            rgba[..., 3] = to_u8(coverage)
        Image.fromarray(rgba).save(folder / name)
    return name


# ---------------------------------------------------------------------------
# Fonts
# ---------------------------------------------------------------------------

def find_fonts():
    """Font files that draw all ten digits: preferred faces first, then any others."""
    dirs = list(FONT_DIRS)
    try:
        import matplotlib  # optional: its bundled DejaVu fonts
        dirs.append(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf")
    except ImportError:
        pass
    found = {}
    for d in dirs:
        if d.is_dir():
            for p in sorted(d.rglob("*")):
                if p.suffix.lower() in (".ttf", ".otf") and p.stem not in found:
                    found[p.stem] = p
    ordered = [found[s] for s in PREFERRED_FONTS if s in found]
    ordered += [p for s, p in sorted(found.items()) if s not in PREFERRED_FONTS]
    usable = []
    for p in ordered:
        if len(usable) == MAX_FONTS:
            break
        if _draws_digits(p):
            usable.append(p)
    return usable


def _draws_digits(path):
    """True when the font has ten distinct, visible digit glyphs (not a symbol font)."""
    try:
        font = ImageFont.truetype(str(path), 40)
    except OSError:
        return False
    shapes = set()
    for d in "0123456789":
        im = Image.new("L", (80, 80), 0)
        ImageDraw.Draw(im).text((40, 40), d, font=font, fill=255, anchor="mm")
        a = np.asarray(im)
        if a.max() < 128:
            return False
        shapes.add(a.tobytes())
    return len(shapes) == 10


def typed_digit(font_path, digit, size, angle):
    """Ink coverage of ``digit`` typed at ``size`` px, turned ``angle`` degrees."""
    font = ImageFont.truetype(str(font_path), size)
    side = 2 * size
    im = Image.new("L", (side, side), 0)
    ImageDraw.Draw(im).text((side // 2, side // 2), str(digit), font=font, fill=255, anchor="mm")
    im = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=0)
    a = np.asarray(im, np.float32) / 255.0
    rows, cols = np.flatnonzero(a.max(axis=1) > 0), np.flatnonzero(a.max(axis=0) > 0)
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


# ---------------------------------------------------------------------------
# Chalk
# ---------------------------------------------------------------------------

def chalk_on_board(coverage, rng):
    """Grainy light strokes on a dark, smudged, noisy board: RGB float (H, W, 3)."""
    H, W = coverage.shape
    board = [np.array([0.15, 0.24, 0.19]), np.array([0.17, 0.18, 0.19]),
             np.array([0.10, 0.16, 0.13])][rng.integers(0, 3)] * rng.uniform(0.8, 1.2)
    # Chalk leaves grain: the stroke is broken where the board's texture dips.
    grain = np.clip(blur(rng.random((H, W)).astype(np.float32), 0.7) * 1.8 - 0.2, 0, 1)
    chalk = coverage * (0.55 + 0.45 * grain) * rng.uniform(0.6, 0.9)
    # Old wiping leaves large faint smudges of chalk dust.
    smudge = blur(rng.random((max(1, H // 16), max(1, W // 16))).astype(np.float32), 1.0)
    smudge = np.asarray(Image.fromarray(smudge, mode="F").resize((W, H), Image.Resampling.BICUBIC))
    dust = np.clip(smudge - 0.5, 0, 1) * rng.uniform(0.05, 0.2)
    rgb = board + (chalk + dust)[..., None]
    rgb = rgb * lighting((H, W), rng, rng.uniform(0, 0.25))[..., None]
    rgb = rgb + rng.normal(0, rng.uniform(0.01, 0.04), (H, W))[..., None]
    return np.clip(rgb, 0, 1)


# ---------------------------------------------------------------------------
# The sets
# ---------------------------------------------------------------------------

def write_labels(folder, rows):
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        w.writerows(rows)


def make_photo_set(out, X, y, rng):
    folder = out / "photo"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (x, label) in enumerate(zip(X, y)):
        page = place(enlarge(x, int(rng.integers(5, 13))), rng)
        rows.append((save_mixed(ink_on_paper(page, rng), page, rng, f"{i:05d}", folder), int(label)))
    write_labels(folder, rows)
    return len(rows)


def make_typed_set(out, fonts, rng):
    folder = out / "typed"
    folder.mkdir(parents=True, exist_ok=True)
    rows, details = [], []
    for font in fonts:
        for size in FONT_SIZES:
            for angle in ANGLES:
                for digit in range(10):
                    ink = typed_digit(font, digit, size, angle + rng.uniform(-1, 1))
                    page = place(ink, rng, margin=(1.4, 2.5))
                    stem = f"{font.stem}-{size}-{angle:+d}-{digit}"
                    name = save_mixed(ink_on_paper(page, rng, colour=np.array([0.05, 0.05, 0.06])),
                                      page, rng, stem, folder)
                    rows.append((name, digit))
                    details.append((name, digit, font.name, size, angle))
    write_labels(folder, rows)
    with open(folder / "details.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "font", "size", "angle"])
        w.writerows(details)
    (folder / "fonts.txt").write_text("".join(f"{p}\n" for p in fonts))
    return len(rows)


def make_chalk_set(out, X, y, fonts, rng, n_typed=100):
    folder = out / "chalk"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (x, label) in enumerate(zip(X, y)):
        page = place(enlarge(x, int(rng.integers(5, 13))), rng)
        name = f"mnist-{i:05d}.jpg"
        Image.fromarray(to_u8(chalk_on_board(page, rng))).save(folder / name,
                                                               quality=int(rng.integers(70, 95)))
        rows.append((name, int(label)))
    for i in range(n_typed if fonts else 0):
        font, digit = fonts[rng.integers(0, len(fonts))], int(rng.integers(0, 10))
        ink = typed_digit(font, digit, int(rng.integers(60, 200)), rng.uniform(-8, 8))
        page = place(ink, rng)
        name = f"typed-{i:05d}.jpg"
        Image.fromarray(to_u8(chalk_on_board(page, rng))).save(folder / name, quality=85)
        rows.append((name, digit))
    write_labels(folder, rows)
    return len(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write photo/, typed/ and chalk/ into")
    ap.add_argument("--n", type=int, default=1000, help="MNIST test digits to photograph (default 1000)")
    ap.add_argument("--n-chalk", type=int, default=500, help="MNIST digits on the blackboard (default 500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mnist", type=Path, default=None, help="folder of the gzipped MNIST IDX files")
    ap.add_argument("--sets", default="photo,typed,chalk", help="which sets to make (comma-separated)")
    args = ap.parse_args(argv)
    sets = {s.strip() for s in args.sets.split(",") if s.strip()}
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    need_mnist = sets & {"photo", "chalk"}
    if need_mnist:
        X, y = read_mnist_test(find_mnist(args.mnist), args.n + args.n_chalk)
    fonts = find_fonts() if sets & {"typed", "chalk"} else []
    if "typed" in sets and len(fonts) < 4:
        print(f"note: only {len(fonts)} usable fonts found; for more, install e.g. "
              "fonts-dejavu fonts-liberation fonts-freefont-ttf fonts-comic-neue fonts-urw-base35",
              file=sys.stderr)

    # Each set has its own seeded stream, so making one set does not change another.
    seeds = np.random.SeedSequence(args.seed).spawn(3)
    if "photo" in sets:
        n = make_photo_set(out, X[:args.n], y[:args.n], np.random.default_rng(seeds[0]))
        print(f"photo: {n} images in {out / 'photo'}")
    if "typed" in sets:
        n = make_typed_set(out, fonts, np.random.default_rng(seeds[1]))
        print(f"typed: {n} images in {out / 'typed'} ({len(fonts)} fonts)")
    if "chalk" in sets:
        n = make_chalk_set(out, X[args.n:args.n + args.n_chalk], y[args.n:args.n + args.n_chalk],
                           fonts, np.random.default_rng(seeds[2]))
        print(f"chalk: {n} images in {out / 'chalk'}")


if __name__ == "__main__":
    main()
