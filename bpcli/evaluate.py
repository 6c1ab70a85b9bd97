"""``bp evaluate``: score a checkpoint on a split and render the report.

The report is the dict docs/manual.md specifies for ``--json``; the text view is
rendered from that same dict, so the two never disagree.
"""

import numpy as np

from .checkpoint import check_outputs
from .config import from_values
from .data import load_mnist_for, validation_split
from .datasets import of_config
from .errors import ConfigError
from .metrics import most_confused, predict, report


def split_arrays(data, values, split):
    """The images and labels of ``split`` as the run that wrote ``values`` (its config) saw them."""
    if split == "test":
        return data.test_images, data.test_labels
    train_X, train_y, val_X, val_y = validation_split(data, from_values(values, "the model's config").recipe)
    if split == "val" and not len(val_y):
        raise ConfigError("this model's run held out no validation images (data.validation: 0); "
                          "evaluate it with --split test")
    return (val_X, val_y) if split == "val" else (train_X, train_y)


def evaluate_checkpoint(path, model, split="test", data_dir=None, mirrors=None, offline=None):
    """The report of docs/manual.md, plus "dataset" and "classes" (the name of each label,
    in the order of the "per_digit" keys and the confusion matrix's rows)."""
    values = model.meta.get("config", {})
    dataset = of_config(values)
    data = load_mnist_for(values, data_dir, split="test" if split == "test" else None,
                          mirrors=mirrors, offline=offline)
    X, y = split_arrays(data, values, split)
    P = predict(model.Ws, model.bs, model.spec, X)
    check_outputs(P, path)
    return {"checkpoint": str(path), "split": split, "dataset": dataset.name,
            "classes": list(dataset.classes), **report(P, y, model.spec)}


def gate_failures(doc, min_accuracy=None, min_digit_accuracy=None):
    """Messages for every --min-* threshold the report does not meet."""
    failures = []
    if min_accuracy is not None and (doc["accuracy"] or 0.0) < min_accuracy:
        failures.append(f"accuracy {doc['accuracy']:.4f} is below --min-accuracy {min_accuracy:g}")
    if min_digit_accuracy is not None:
        low = [(d, row["accuracy"]) for d, row in doc["per_digit"].items()
               if row["accuracy"] is not None and row["accuracy"] < min_digit_accuracy]
        if low:
            listed = ", ".join(f"{d}: {a:.4f}" for d, a in low)
            failures.append(f"digit accuracy below --min-digit-accuracy {min_digit_accuracy:g} ({listed})")
    return failures


def _pct(x):
    return "    -" if x is None else f"{x:6.2%}"


def render_report(doc):
    """The text report; labels by their names where they have them ("Sneaker"), the
    confusion matrix's columns by number (a legend maps them to names)."""
    C = np.array(doc["confusion"])
    names = [str(c) for c in doc.get("classes") or range(len(C))]
    named = names != [str(i) for i in range(len(C))]
    label = max(5, *map(len, names))
    title = "" if doc.get("dataset", "mnist") == "mnist" else f" [{doc['dataset']}]"
    lines = [f"{doc['checkpoint']} on {doc['split']}{title} ({doc['n']:,} images)",
             f"accuracy {doc['accuracy']:.2%}   loss {doc['loss']:.4f}", "",
             f"{'class' if named else 'digit':>{label}}  support  correct  accuracy  precision"]
    for d, row in doc["per_digit"].items():
        lines.append(f"{names[int(d)]:>{label}}  {row['support']:>7}  {row['correct']:>7}  "
                     f"{_pct(row['accuracy']):>8}  {_pct(row['precision']):>9}")
    width = max(4, len(str(C.max())) + 1)
    head = max(9, label + 2) if named else 9
    lines += ["", f"confusion matrix (rows: true {'class' if named else 'digit'}, columns: predicted"
                  + (", by number" if named else "") + ")",
              f"{'true' + chr(92) + 'pred':>{head}}" + "".join(f"{j:>{width}}" for j in range(len(C)))]
    for i, row in enumerate(C):
        row_label = f"{i} {names[i]}" if named else str(i)
        lines.append(f"{row_label:>{head}}" + "".join(f"{v:>{width}}" for v in row))
    pairs = most_confused(doc["confusion"])
    if pairs:
        lines += ["", "most confused: " + ", ".join(f"{names[i]} -> {names[j]}: {n}" for i, j, n in pairs)]
    return "\n".join(lines)
