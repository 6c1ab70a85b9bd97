"""How finely a step is cut for ``threads`` threads: its shards and its update's parts.

The counts fix the arithmetic (the shards' gradients are added up in shard
order; the update's parts have fixed bounds), so they depend on the thread
count and the network alone, never on where the shards end up running.
"""

# Multiply-adds a shard must have to be worth a thread of its own. A shard costs
# ~25 calls from Python and a hand-over of the GIL around each, whatever its size:
# batch-10 training of a 784-16-16-10 net took 2.3x as long on two shards of 5 rows
# as on one shard; network a (784-128-64-10) gained ~1.2x from two shards of 64 rows
# (13M multiply-adds each), and 784-512-256-10, 1.5x from two of 128 (190M each).
SHARD_MIN_MACS = 1 << 23

# Parameters from which the reduction and update run on the workers (a second round of
# the step) rather than on the caller alone. Each round costs a wake-up of the workers
# (~0.05-0.1 ms on a VM); on network a (109k parameters) the passes are cheaper than
# that, and the second round cost 8% of the step; on 1600-800 (2.5M) it gained 12%.
PARALLEL_UPDATE_FROM = 500_000


def macs_per_example(sizes):
    """Multiply-adds of one example's feedforward and backprop: every layer's product
    and weight gradient, and every layer's error below it but the input's."""
    products = [m * n for m, n in zip(sizes[:-1], sizes[1:])]
    return 3 * sum(products) - products[0]


def shards_for(threads, batch, sizes):
    """How many shards a mini-batch of ``batch`` rows is split into on ``threads``
    threads: one per thread, as long as each keeps SHARD_MIN_MACS of work; at least one.
    (More, smaller shards than threads would balance better, but each costs: on network
    a, splitting a step into 2 shards cost 13% more CPU, into 4, 43%, one after the other.)"""
    worth = batch * macs_per_example(sizes) // SHARD_MIN_MACS
    return max(1, min(threads, batch, worth))


def parts_for(threads, n_params):
    """How many parts the flat vector is cut into for the reduction and update on
    ``threads`` threads: two per thread for a large vector, so that each part's few
    arrays stay in a core's cache across the update's passes; else one, the whole
    vector, on the caller."""
    return 2 * threads if threads > 1 and n_params >= PARALLEL_UPDATE_FROM else 1
