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

TINY = 1e-20       # optimizer state below this is flushed to 0 ...
FLUSH_EVERY = 50   # ... every this many steps (see SGD.flush_subnormals)


class SGD:
    """w <- w - lr * g, with optional momentum (heavy-ball or Nesterov).

    Momentum keeps a velocity v of past gradients (PyTorch's formulation,
    so the buffer does not depend on the learning rate)::

        v <- momentum * v + g
        w <- w - lr * v                     heavy ball
        w <- w - lr * (g + momentum * v)    Nesterov: look one step ahead
    """

    def __init__(self, params, momentum=0.0, nesterov=False, weight_decay=0.0, decay_mask=None):
        self.params = params
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.decay_mask = decay_mask or [True] * len(params)
        self.v = [np.zeros_like(p) for p in params] if momentum else []
        self.scratch = [np.empty_like(p) for p in params]

    def step(self, grads, lr):
        """One update, in place, through one scratch array per parameter; grads are left as they are."""
        velocities = self.v or [None] * len(self.params)  # none without momentum
        for p, g, v, s, decay in zip(self.params, grads, velocities, self.scratch, self.decay_mask):
            if self.weight_decay and decay:
                g = np.add(g, np.multiply(p, self.weight_decay, out=s), out=s)  # g + weight_decay * w
            if self.momentum:
                v *= self.momentum
                v += g
                if self.nesterov:  # w -= lr * g + lr * momentum * v
                    p -= np.multiply(g, lr, out=s)
                    p -= np.multiply(v, lr * self.momentum, out=s)
                else:
                    p -= np.multiply(v, lr, out=s)
            else:
                p -= np.multiply(g, lr, out=s)

    def state(self):
        return {f"v{i}": v for i, v in enumerate(self.v)}

    def load_state(self, state):
        for i, v in enumerate(self.v):
            v[...] = state[f"v{i}"]

    def flush_subnormals(self):
        """Set velocity entries too small to matter to exactly 0.

        Weights that never get a gradient (MNIST's always-black border pixels)
        see their velocity decay geometrically into float32 subnormals, and
        arithmetic on subnormals is many times slower. Called every FLUSH_EVERY
        steps: at momentum >= 0.5, 1e-20 takes more than 50 steps to decay
        below float32's smallest normal number (1.2e-38), so no entry gets
        there; 1e-20 is far below anything that moves a weight.
        """
        for v in self.v:
            v[np.abs(v) < TINY] = 0


class Adam:
    """Adam (Kingma & Ba 2015): per-weight steps from running moments of g and g^2."""

    def __init__(self, params, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decay_mask=None):
        self.params = params
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.weight_decay = weight_decay
        self.decay_mask = decay_mask or [True] * len(params)
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = np.zeros((), dtype=np.int64)
        self.scratch = [np.empty_like(p) for p in params]
        self.scratch2 = [np.empty_like(p) for p in params] if weight_decay else [None] * len(params)

    def step(self, grads, lr):
        """One update, in place, through two scratch arrays per parameter; grads are left as they are."""
        self.t += 1
        t = int(self.t)
        # bias correction folded into the step size
        step = lr * math.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        for p, g, m, v, s, s2, decay in zip(self.params, grads, self.m, self.v, self.scratch, self.scratch2,
                                            self.decay_mask):
            if self.weight_decay and decay:
                g = np.add(g, np.multiply(p, self.weight_decay, out=s2), out=s2)  # g + weight_decay * w
            m *= self.beta1
            m += np.multiply(g, 1 - self.beta1, out=s)      # m = beta1 m + (1 - beta1) g
            v *= self.beta2
            s = np.multiply(g, g, out=s)
            v += np.multiply(s, 1 - self.beta2, out=s)      # v = beta2 v + (1 - beta2) g^2
            np.sqrt(v, out=s)
            s += self.eps
            np.divide(m, s, out=s)
            p -= np.multiply(s, step, out=s)                # w -= step * m / (sqrt(v) + eps)

    def state(self):
        state = {f"m{i}": m for i, m in enumerate(self.m)}
        state.update({f"v{i}": v for i, v in enumerate(self.v)})
        state["t"] = self.t
        return state

    def load_state(self, state):
        for i, (m, v) in enumerate(zip(self.m, self.v)):
            m[...] = state[f"m{i}"]
            v[...] = state[f"v{i}"]
        self.t[...] = state["t"]

    def flush_subnormals(self):
        for arr in self.m + self.v:
            arr[np.abs(arr) < TINY] = 0


def make_optimizer(train_cfg, params, decay_mask):
    if train_cfg["optimizer"] == "adam":
        return Adam(params, beta1=train_cfg["beta1"], beta2=train_cfg["beta2"],
                    weight_decay=train_cfg["weight_decay"], decay_mask=decay_mask)
    return SGD(params, momentum=train_cfg["momentum"], nesterov=train_cfg["nesterov"],
               weight_decay=train_cfg["weight_decay"], decay_mask=decay_mask)


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


def learning_rate(train_cfg, epoch):
    """The learning rate at fractional epoch ``epoch`` under the config's schedule and warmup."""
    lr = SCHEDULES[train_cfg["schedule"]](
        train_cfg["lr"], epoch, train_cfg["epochs"],
        step_size=train_cfg["step_size"], gamma=train_cfg["gamma"],
    )
    return lr * warmup(epoch, train_cfg["warmup_epochs"])


def clip_max_norm(Ws, max_norm):
    """Rescale every column of each W (one unit's incoming weights) to length <= max_norm
    (Srivastava et al. 2014 pair this with dropout: big steps, bounded weights)."""
    for W in Ws:
        norms = np.sqrt(np.einsum("ij,ij->j", W, W))
        W *= np.minimum(1.0, max_norm / np.maximum(norms, 1e-12)).astype(W.dtype)
