"""bp's sample digits (``bpcli/samples``), drawn here: marker strokes on slightly uneven
paper, like a phone photo of a drawing, and nothing taken from a dataset.

    python tests/draw_samples.py      # writes bpcli/samples/seven.png and three.png

``tests/test_samples.py`` checks that the shipped files are these drawings.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SAMPLES = Path(__file__).resolve().parents[1] / "bpcli" / "samples"
SIZE, INK, WIDTH = 320, (38, 40, 52), 24


def paper(rng):
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    shade = 232 + 14 * x - 10 * y + rng.normal(0, 2.5, (SIZE, SIZE))  # light from one side, grain
    return Image.fromarray(np.clip(shade, 0, 255).astype(np.uint8)).convert("RGB")


def stroke(draw, points):
    draw.line(points, fill=INK, width=WIDTH, joint="curve")
    r = WIDTH // 2
    for x, y in (points[0], points[-1]):  # a marker's round ends
        draw.ellipse((x - r, y - r, x + r, y + r), fill=INK)


def arc(cx, cy, rx, ry, degrees_from, degrees_to, n=40):
    t = np.radians(np.linspace(degrees_from, degrees_to, n))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]


STROKES = {
    # a top bar with a little rise, then a long diagonal
    "seven": [[(88, 92), (160, 86), (236, 82)], [(236, 82), (200, 150), (168, 220), (146, 262)]],
    # two bowls opening to the left
    "three": [arc(158, 114, 58, 44, 200, 450), arc(160, 206, 66, 54, 270, 520)],
}


def draw(name):
    """The sample ``name`` ('seven' or 'three') as an RGB PIL image."""
    rng = np.random.default_rng(sorted(STROKES).index(name))
    img = paper(rng)
    pen = ImageDraw.Draw(img)
    for points in STROKES[name]:
        stroke(pen, points)
    return img.filter(ImageFilter.GaussianBlur(1.2))  # a photo is never quite sharp


if __name__ == "__main__":
    for name in STROKES:
        draw(name).save(SAMPLES / f"{name}.png", optimize=True)
