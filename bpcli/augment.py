"""Data augmentation: random affine warps and elastic distortions, vectorised over the batch.

A digit that is shifted, turned a little, scaled, sheared or wobbled is
still the same digit; training on such variants teaches the network what
does not matter (Simard, Steinkraus & Platt 2003: an MLP of 800 hidden units
goes from 98.4% to 98.9% with affine and 99.3% with elastic distortions).

Every transform is a map from each output pixel p to a source point q in the
input image; the output is the input read at q by bilinear interpolation
(0 outside the image). With the image centre c = (13.5, 13.5)::

    q = c + A^-1 (p - c) - t + e(p)

A = rotation(theta) @ scale(s) @ shear(h), t the shift, and e an elastic
displacement field: uniform noise in [-1, 1] per pixel, smoothed by a
Gaussian of width sigma and scaled by alpha. The Gaussian is separable, so
smoothing a (28, 28) field is two products with a fixed (28, 28) matrix.

Everything is computed for the whole batch at once with array operations;
no Python loop runs over images or pixels.
"""

import math

import numpy as np

SIDE = 28
CENTRE = (SIDE - 1) / 2

ELASTIC_SIGMA = 4.0  # Simard et al. 2003: sigma 4 (and alpha 34) on MNIST


def _grid():
    ys, xs = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    return (xs.ravel() - CENTRE), (ys.ravel() - CENTRE)


GX, GY = _grid()  # pixel coordinates relative to the centre, (784,) each


def gaussian_matrix(sigma, n=SIDE):
    """G (n, n) such that G @ f smooths f along its first axis (zero padding)."""
    i = np.arange(n, dtype=np.float64)
    G = np.exp(-((i[:, None] - i[None, :]) ** 2) / (2 * sigma**2))
    G /= G.sum(axis=1, keepdims=True)  # shape preserved near the border
    return G.astype(np.float32)


def affine_sources(rng, n, shift=0.0, rotate=0.0, scale=0.0, shear=0.0):
    """Source coordinates (qx, qy), each (n, 784), of n random affine warps."""
    def uniform(half):
        return rng.uniform(-half, half, (n, 1)).astype(np.float32) if half else np.zeros((n, 1), np.float32)

    theta = uniform(math.radians(rotate))
    s = 1.0 + uniform(scale)
    h = uniform(shear)
    tx, ty = uniform(shift), uniform(shift)
    # A^-1 for A = R(theta) S(s) H(h): H^-1 S^-1 R^-1, written out per element
    cos, sin = np.cos(theta), np.sin(theta)
    # R^-1 (p) = [cos, sin; -sin, cos] p ;  S^-1 = 1/s ;  H^-1 = [1, -h; 0, 1]
    rx = (cos * GX + sin * GY) / s
    ry = (-sin * GX + cos * GY) / s
    qx = rx - h * ry + (CENTRE - tx)
    qy = ry + (CENTRE - ty)
    return qx, qy


def elastic_displacements(rng, n, alpha, sigma=ELASTIC_SIGMA):
    """Smoothed random displacement fields (dx, dy), each (n, 784), of strength alpha pixels."""
    G = gaussian_matrix(sigma)
    fields = rng.uniform(-1.0, 1.0, (2 * n, SIDE, SIDE)).astype(np.float32)
    # smooth along rows then columns: G @ f @ G.T for every field, as two big products
    smooth = np.matmul(G, fields)
    smooth = np.matmul(smooth, G.T)
    smooth *= alpha
    smooth = smooth.reshape(2, n, SIDE * SIDE)
    return smooth[0], smooth[1]


def bilinear(X, qx, qy):
    """Read each image of X (n, 784) at the points (qx, qy) (n, 784); 0 outside the image.

    The image is padded with zeros (one pixel before, two after, so every
    neighbour of a point clipped to [-1, 28] exists): a point between the
    border and the outside blends towards 0, one beyond it reads 0.
    """
    n = len(X)
    W = SIDE + 3
    padded = np.zeros((n, W, W), dtype=np.float32)
    padded[:, 1:SIDE + 1, 1:SIDE + 1] = X.reshape(n, SIDE, SIDE)
    qx = np.clip(qx, -1.0, SIDE)
    qy = np.clip(qy, -1.0, SIDE)
    x0, y0 = np.floor(qx), np.floor(qy)
    fx, fy = qx - x0, qy - y0
    # flat index of the top-left neighbour in the padded batch (+1: the zero ring)
    idx = ((y0 + 1) * W + (x0 + 1)).astype(np.intp)
    idx += (np.arange(n, dtype=np.intp) * W * W)[:, None]
    flat = padded.ravel()
    top_left, top_right = flat.take(idx), flat.take(idx + 1)
    bottom_left, bottom_right = flat.take(idx + W), flat.take(idx + W + 1)
    top = top_left + (top_right - top_left) * fx
    bottom = bottom_left + (bottom_right - bottom_left) * fx
    return top + (bottom - top) * fy


def augment(X, rng, spec):
    """A randomly transformed copy of the batch X (n, 784) float32 in [0, 1].

    spec: the ``train.augment`` map, e.g. {"shift": 2, "rotate": 10, "elastic": 34}
    (its keys are declared in config.AUGMENT).
    Labels are unchanged; the result stays in [0, 1] (bilinear weights are convex).
    """
    n = len(X)
    qx, qy = affine_sources(rng, n, spec.get("shift", 0.0), spec.get("rotate", 0.0),
                            spec.get("scale", 0.0), spec.get("shear", 0.0))
    alpha = spec.get("elastic", 0.0)
    if alpha:
        dx, dy = elastic_displacements(rng, n, alpha, spec.get("elastic_sigma", ELASTIC_SIGMA))
        qx += dx
        qy += dy
    return bilinear(X, qx, qy)
