"""The engine's parallel layer: how one mini-batch's shards use more than one core.

The fused core (``bpcli.fast.core``) computes a step on one process, shard by
shard. This layer decides how many shards a step has and where they run:

* ``sharding``: one shard per thread, as long as each is worth one
  (``shards_for``), and how many parts the update is cut into (``parts_for``);
* ``processes``: ``WorkerProcesses``, forked over shared memory (no
  interpreter lock between them);
* ``threads``: ``WorkerThreads``, where processes cannot be forked;
* ``placement``: ``ShardPlacement``, which times the steps and picks where
  the shards run: on worker processes, on worker threads, or one after the
  other on the caller ("serial").

Every shard writes its gradient to memory of its own and the core adds them
up in shard order, so the same seed and thread count give the same weights,
bit for bit, wherever the shards ran: where is a matter of speed alone.
"""
