"""Optimizers that move the weights against the gradient, and learning-rate schedules.

Every optimizer updates the parameter arrays in place (scikit-learn's
``_stochastic_optimizers`` habit) and keeps its state as named arrays, so a
checkpoint can store it and a resumed run continues exactly.

Weight decay is L2 regularisation on the weights (not the biases): the cost
gains ``weight_decay / 2 * sum(W**2)``, so the gradient gains
``weight_decay * W``.
"""

import math
import numpy as np

TINY = 1e-20                # optimizer state below this is flushed to 0 (see flush_subnormals)
SMALLEST_NORMAL = 1.18e-38  # float32's smallest normal number


def steps_to_subnormal(decay):
    """Steps of ``x <- decay * x`` that take TINY below SMALLEST_NORMAL: how often
    flush_subnormals must run (391 steps at 0.9). None when nothing decays."""
    if not 0 < decay < 1:
        return None
    return max(1, math.floor(math.log(SMALLEST_NORMAL / TINY) / math.log(decay)))


def flush_subnormals(arrays):
    """Set entries too small to matter to exactly 0.

    Weights that (almost) never get a gradient, such as those of pixels that
    are rarely inked, see their optimizer state decay geometrically into
    float32 subnormals, and arithmetic on subnormals is many times slower.
    Training calls this every ``flush_every`` steps, before anything that
    was above TINY can get there; 1e-20 is far below anything that moves a
    weight.
    """
    for arr in arrays:
        arr[np.abs(arr) < TINY] = 0


class SGD:
    """w <- w - lr * g, with optional momentum (heavy-ball or Nesterov).

    Momentum keeps a velocity v of past gradients (PyTorch's formulation,
    so the buffer does not depend on the learning rate)::

        v <- momentum * v + g
        w <- w - lr * v                     heavy ball
        w <- w - lr * (g + momentum * v)    Nesterov: look one step ahead

    ``theta`` is one flat vector of all parameters, updated in place; its
    first ``n_decay`` entries (the weights) are under weight decay. The state
    is saved as two named parts, the decayed one first. (The training
    engine, ``bpcli.fast``, runs this same update fused into its matrix
    products; the tests hold it to this one.)
    """

    def __init__(self, theta, momentum=0.0, nesterov=False, weight_decay=0.0, n_decay=None):
        self.theta = theta
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.n_decay = len(theta) if n_decay is None else n_decay
        self.v = np.zeros_like(theta) if momentum else None
        self.flush_every = steps_to_subnormal(momentum)

    def step(self, g, lr):
        """One update. The gradient g doubles as scratch space: afterwards it holds
        nothing meaningful."""
        w = self.theta
        if self.weight_decay:
            add_decay(g, w, self.weight_decay, self.n_decay)
        if self.v is None:
            w -= lr * g
            return
        self.v *= self.momentum
        self.v += g
        if self.nesterov:
            w -= lr * (g + self.momentum * self.v)
        else:
            w -= lr * self.v

    def state(self):
        return split_state(v=self.v, n=self.n_decay) if self.v is not None else {}

    def load_state(self, state):
        if self.v is not None:
            join_state(state, self.n_decay, v=self.v)

    def flush_subnormals(self):
        if self.v is not None:
            flush_subnormals([self.v])


class Adam:
    """Adam (Kingma & Ba 2015): per-weight steps from running moments of g and g^2.
    Parameters and state are laid out as for SGD."""

    def __init__(self, theta, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, n_decay=None):
        self.theta = theta
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.weight_decay = weight_decay
        self.n_decay = len(theta) if n_decay is None else n_decay
        self.m = np.zeros_like(theta)
        self.v = np.zeros_like(theta)
        self.t = np.zeros((), dtype=np.int64)
        self.scratch = np.empty_like(theta)
        self.flush_every = steps_to_subnormal(min(beta1, beta2))

    def step(self, g, lr):
        """One update; the gradient g doubles as scratch space, as for SGD."""
        self.t += 1
        t = int(self.t)
        # bias correction folded into the step size
        step = lr * math.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        p, m, v, s = self.theta, self.m, self.v, self.scratch
        if self.weight_decay:
            add_decay(g, p, self.weight_decay, self.n_decay, s)
        m *= self.beta1
        m += np.multiply(g, 1 - self.beta1, out=s)      # m = beta1 m + (1 - beta1) g
        v *= self.beta2
        g *= g
        v += np.multiply(g, 1 - self.beta2, out=g)      # v = beta2 v + (1 - beta2) g^2
        np.sqrt(v, out=s)
        s += self.eps
        np.divide(m, s, out=s)
        p -= np.multiply(s, step, out=s)                # w -= step * m / (sqrt(v) + eps)

    def state(self):
        state = split_state(m=self.m, v=self.v, n=self.n_decay)
        state["t"] = self.t
        return state

    def load_state(self, state):
        join_state(state, self.n_decay, m=self.m, v=self.v)
        self.t[...] = state["t"]

    def flush_subnormals(self):
        flush_subnormals([self.m, self.v])


def add_decay(g, theta, weight_decay, n_decay, scratch=None):
    """g += weight_decay * w on the weights: the gradient of L2's weight_decay / 2 * sum(w**2)."""
    out = None if scratch is None else scratch[:n_decay]
    g[:n_decay] += np.multiply(theta[:n_decay], weight_decay, out=out)


def split_state(n, **arrays):
    """{"v0": v[:n], "v1": v[n:], ...}: each state vector as its decayed part and the rest."""
    state = {}
    for name, arr in arrays.items():
        state[f"{name}0"], state[f"{name}1"] = arr[:n], arr[n:]
    return state


def join_state(state, n, **arrays):
    for name, arr in arrays.items():
        arr[:n], arr[n:] = state[f"{name}0"], state[f"{name}1"]


def make_optimizer(train, theta, n_decay):
    """The optimizer a config's train section (``config.Train``) names, over ``theta``."""
    if train.optimizer == "adam":
        return Adam(theta, beta1=train.beta1, beta2=train.beta2, weight_decay=train.weight_decay, n_decay=n_decay)
    return SGD(theta, momentum=train.momentum, nesterov=train.nesterov, weight_decay=train.weight_decay,
               n_decay=n_decay)


# ---------------------------------------------------------------------------
# Schedules: pure functions of where training is, in epochs (fractional).

def constant(lr, epoch, epochs, **_):
    return lr


def step(lr, epoch, epochs, step_size=5, gamma=0.1, **_):
    """Multiply by gamma every step_size epochs."""
    return lr * gamma ** math.floor(epoch / step_size)


def cosine(lr, epoch, epochs, **_):
    """Half a cosine from lr down to 0 over the run (Loshchilov & Hutter 2017)."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(epoch / epochs, 1.0)))


SCHEDULES = {"constant": constant, "step": step, "cosine": cosine}


def warmup(epoch, warmup_epochs):
    """Factor in (0, 1] that grows linearly over the first warmup_epochs (Goyal et al. 2017):
    large steps from random weights can throw training off before it starts."""
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return 1.0
    return (epoch + 1e-3) / warmup_epochs


def learning_rate(train, epoch):
    """The learning rate at fractional epoch ``epoch`` under the schedule and warm-up of a
    config's train section (``config.Train``)."""
    lr = SCHEDULES[train.schedule](train.lr, epoch, train.epochs, step_size=train.step_size, gamma=train.gamma)
    return lr * warmup(epoch, train.warmup_epochs)


def clip_max_norm(Ws, max_norm):
    """Rescale every column of each W (one unit's incoming weights) to length <= max_norm
    (Srivastava et al. 2014 pair this with dropout: big steps, bounded weights)."""
    for W in Ws:
        norms = np.sqrt(np.einsum("ij,ij->j", W, W))
        W *= np.minimum(1.0, max_norm / np.maximum(norms, 1e-12)).astype(W.dtype)
