"""The fast engine: everything bp does for speed, behind one door.

``bpcli.network`` and ``bpcli.optim`` are the reference: they read like the
equations (``bpcli.reference`` trains with them). ``Engine`` trains the same
network the same way, and the tests hold it to that reference for every
activation, output, cost, optimizer and thread count. It has two layers:

* the fused core (``core.FusedCore``): one step on one process, with the
  layout (``layout``), the shards' preallocated feedforward and backprop
  (``shard``), the update fused into the gradient's products (``fused``),
  the in-place activations (``kernels``) and the BLAS calls (``blas``);
* the parallel layer (``parallel``): how many shards a step has for
  ``--threads N`` (``parallel.sharding``), the worker processes
  (``parallel.processes``) and worker threads (``parallel.threads``) that
  run them, and the choice of where they run (``parallel.placement``).

``engine.Engine`` puts the two together; ``bpcli.reference`` lists the
interface both engines answer.
"""

from . import blas
from .engine import Engine

__all__ = ["Engine", "blas"]
