"""What ``bp train`` allocates, counted once: the memory budget that ``config``
checks a config against before anything is allocated, and the sizes that
train and metrics allocate by.

Counted from bpcli/train.py (Run, Run.train_epoch), bpcli/fast (Engine,
Shard), bpcli/augment.py (Augmenter) and bpcli/metrics.py; train and metrics
import their batch counts from here. No numpy, so that config (and 'bp
--help') stay cheap; tests/test_config.py holds the count to a measured
training run.
"""

N_TRAIN = 60_000  # the training images of MNIST (and of each drop-in): no batch or split is larger
N_TEST = 10_000  # its test images

# float32 per parameter: theta, the gradient (kept by the engine for the whole run),
# up to two optimizer moments (Adam's m and v), Adam's scratch, and the copies a
# checkpoint save makes (the weight parts of m and v in fast.Layout.state_to_model,
# W0 in pixel order in fast.Layout.params, the file's own buffers)
BYTES_PER_PARAM = 4 * 9
TALLY_EVERY = 20  # batches between tallies of the training loss and accuracy (train.Run), whose outputs are kept
# Augmenter, per image: the zero-padded 31x31 copy; fx, fy, tmp, qx, qy, 4 corner
# planes (9 x 784); idx as intp (2 x 784); two elastic work arrays of 2 fields each;
# the two output buffers train alternates between (one is prepared while the other trains)
AUGMENT_FLOATS_PER_IMAGE = 31 * 31 + 9 * 784 + 2 * 784 + 4 * 784 + 2 * 784
EVAL_BATCH = 2000  # evaluation's rows per forward pass (metrics)
# the images, uint8: as loaded (train + test), the training split's copy and the
# training copy with the inked pixels first; float32 (N_TRAIN, 10): the epoch's
# targets and the tally's temporaries (at most 4, over at most every example)
DATA_BYTES = 3 * N_TRAIN * 784 + N_TEST * 784 + 5 * 4 * N_TRAIN * 10


def training_bytes(recipe, threads=1):
    """Bytes ``bp train`` needs under ``recipe`` (a ``config.Recipe``) on ``threads`` threads, by
    part: parameters (with optimizer state, and a gradient per extra thread), data, the
    per-batch buffers of the engine, and evaluation's buffers (up to a batch on each thread)."""
    hidden, dropout = recipe.model.hidden, recipe.model.dropout
    widths = [*hidden, 10]                       # every layer's output: a[l], delta[l]
    widest = max(widths)
    n_params = sum(m * n + n for m, n in zip([784, *hidden], widths))
    floats_per_row = (
        784                                      # Engine.inputs: the batch as float32
        + 2 * sum(widths)                        # Step.a[1:] and Step.delta[1:]
        + widest                                 # f'(a) of one layer, made during backward
        + TALLY_EVERY * 10                       # a[L] of the batches kept for the tally
    )
    if dropout:
        # a dropped copy fed forward and a kept mask per hidden layer; the mask's random draw
        floats_per_row += 2 * sum(hidden) + 2 * max(hidden, default=0)
    if recipe.train.augment:
        floats_per_row += AUGMENT_FLOATS_PER_IMAGE
    if threads > 1:  # worker processes' staged rows (each process keeps to its own rows of the rest)
        floats_per_row += 10 + (sum(hidden) if dropout else 0) + 784 // 4
    batch = recipe.train.batch_size * (4 * floats_per_row + 2 * 784)  # + the uint8 pixels of two batches
    # network.forward keeps every a[l], for a batch on each thread (metrics.predict), and no
    # more batches at once than the largest split scored (validation, test) has
    at_once = min(threads, -(-max(recipe.data.validation, N_TEST) // EVAL_BATCH))
    evaluation = at_once * EVAL_BATCH * 4 * (784 + 2 * sum(widths))
    return {"parameters": n_params * (BYTES_PER_PARAM + 4 * (threads - 1)), "data": DATA_BYTES, "batch": batch,
            "evaluation": evaluation, "n_params": n_params}


