"""What ``bp export --onnx`` costs and what the file buys: export time, file size, and
onnxruntime's inference time on the 10,000 MNIST test images against bp's own
in-process forward pass, one thread each, medians of several runs.

    python benchmarks/export.py MODEL... [--repeats 5] [--data-dir DIR]

MODEL is a run dir or a checkpoint, as for every bp command. The data dir
must hold MNIST already (``bp download``): nothing is downloaded.

- export: the wall time of the command ``bp export MODEL --onnx FILE --force``
  (a new process: imports, loading the checkpoint, building the graph,
  onnx's full check, and the verification run on the 10,000 test images),
  and the file's size;
- inference: ``bpcli.metrics.predict`` (what ``bp evaluate`` runs, float32
  NumPy, batches of 2,000) with ``OPENBLAS_NUM_THREADS=1``, against
  ``onnxruntime.InferenceSession.run`` on one batch of 10,000 with
  ``intra_op_num_threads=1``; both on the same float32 input in [0, 1].
"""

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_name] = "1"  # before numpy is imported: BLAS reads it once

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def bp_command():
    here = os.path.join(os.path.dirname(sys.executable), "bp")
    return [here] if os.path.exists(here) else [sys.executable, "-m", "bpcli.cli"]


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(model_arg, X, repeats, data_dir):
    import onnxruntime

    from bpcli.checkpoint import load_model
    from bpcli.metrics import predict
    from bpcli.rundir import locate_model

    ckpt, _ = locate_model(model_arg)
    model = load_model(ckpt)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.onnx")
        command = bp_command() + ["export", model_arg, "--onnx", out, "--force", "--data-dir", data_dir]

        def export():
            subprocess.run(command, check=True, capture_output=True)

        export_s = median_time(export, repeats)
        size = os.path.getsize(out)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(out, options, providers=["CPUExecutionProvider"])
        session.run(None, {"pixels": X[:10]})  # warm-up
        ort_s = median_time(lambda: session.run(["probabilities"], {"pixels": X}), repeats)
    predict(model.Ws, model.bs, model.spec, X[:10])
    bp_s = median_time(lambda: predict(model.Ws, model.bs, model.spec, X), repeats)
    return {"model": model_arg, "network": "-".join(map(str, model.spec.sizes)),
            "params": model.spec.n_params, "bytes": size, "export_s": export_s, "bp_s": bp_s, "ort_s": ort_s}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", metavar="MODEL")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=os.environ.get("BP_DATA_DIR", "data"))
    args = parser.parse_args()

    import onnxruntime

    from bpcli.data import load_mnist
    from bpcli.metrics import to_float

    X = to_float(load_mnist(args.data_dir, offline=True, progress=False).test_images)
    rows = [measure(m, X, args.repeats, args.data_dir) for m in args.models]
    print(f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, {len(X):,} test images, "
          f"one thread each, medians of {args.repeats}")
    print(f"{'model':<28} {'network':<18} {'params':>10} {'file MB':>8} {'export s':>9} "
          f"{'bp ms':>8} {'onnxruntime ms':>15} {'speed-up':>9}")
    for r in rows:
        print(f"{r['model'][-28:]:<28} {r['network']:<18} {r['params']:>10,} {r['bytes'] / 1e6:>8.2f} "
              f"{r['export_s']:>9.2f} {r['bp_s'] * 1e3:>8.1f} {r['ort_s'] * 1e3:>15.1f} "
              f"{r['bp_s'] / r['ort_s']:>8.2f}x")


if __name__ == "__main__":
    main()
