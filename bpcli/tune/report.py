"""The end of a search: the summary ``--json`` prints, the table, ``best.yaml`` and the
study folder's ``best`` link."""

import os

from .. import config as config_mod
from ..fsutil import one_line, shell_word, shown_path
from ..progress import percent
from .study import shown_url
from .trials import counts, shown_value


BEST_CONFIG = "best.yaml"
BEST_MODEL = "best"         # in the study folder: a link to the best trial's run dir
TOP = 5                    # rows of the table of best trials


def summarize(study, space, base, config_file, sets, folder, url, n_trials, seconds, timed_out=False):
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    c = counts(trials)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                      key=lambda t: (-t.value, t.number))

    def row(t):
        return {"number": t.number, "val_accuracy": t.value, "epochs": t.user_attrs.get("epochs"),
                "seconds": t.user_attrs.get("seconds"), "run_dir": t.user_attrs.get("run_dir"),
                "host": t.user_attrs.get("host"),
                "params": {k: space[k].decode(v) for k, v in t.params.items() if k in space}}

    doc = {"study": study.study_name, "storage": shown_url(url), "study_dir": folder,
           "trials": n_trials, "counts": c, "seconds": seconds, "top": [row(t) for t in complete[:TOP]],
           "best": None, "best_config": None, "best_model": None, "retrain": None}
    if c["finished"] < n_trials:
        doc["note"] = (f"stopped by --timeout with {c['finished']} of {n_trials} trials finished; run the "
                       "same command again to continue" if timed_out else
                       f"{c['finished']} of {n_trials} trials finished")
    if complete:
        best = row(complete[0])
        best["test_accuracy"] = _test_accuracy(best, base)
        doc["best"] = best
        path = os.path.join(folder, BEST_CONFIG)
        write_best_config(path, config_file, sets, best, study.study_name)
        doc["best_config"] = path
        doc["retrain"] = f"bp train -c {shell_word(path)}"
        if best["run_dir"] and os.path.isdir(best["run_dir"]):
            # the study's best model by name; runs/latest stays the user's own (trials never move it)
            from .. import rundir

            doc["best_model"] = os.path.join(folder, BEST_MODEL)
            rundir.point(doc["best_model"], best["run_dir"])
    return doc


def _test_accuracy(best, base):
    """The best trial's test accuracy, once, from its best.npz: None when that run dir is on
    another machine."""
    ckpt = os.path.join(best["run_dir"] or "", "best.npz")
    if not best["run_dir"] or not os.path.isfile(ckpt):
        return None
    from ..checkpoint import load_model
    from ..evaluate import evaluate_checkpoint

    return evaluate_checkpoint(ckpt, load_model(ckpt), "test", data_dir=base.recipe.data.dir)["accuracy"]


def write_best_config(path, config_file, sets, best, study_name):
    """best.yaml: the base config file's keys, the --set values, and the best trial's values,
    as a config ``bp train -c`` accepts (checked by resolving it)."""
    import yaml

    from ..fsutil import write_text_atomic

    flat = config_mod.flatten(config_mod.read_file(config_mod.locate_config(config_file)[0])) if config_file else {}
    for assignment in sets:
        key, value = config_mod.parse_set(assignment)
        flat[key] = value
    flat.update(best["params"])
    head = (f"# bp tune, study {study_name}: trial {best['number']}, validation accuracy "
            f"{percent(best['val_accuracy'])}\n# base: {config_file or 'the defaults'}"
            f"{''.join(f' --set {s}' for s in sets)}\n# retrain: bp train -c {path}\n")
    write_text_atomic(path, head + yaml.safe_dump(config_mod.unflatten(flat), sort_keys=False, default_flow_style=None))
    config_mod.resolve(path)


def render(doc):
    c = doc["counts"]
    lines = [f"study {doc['study']} ({doc['study_dir']}): {c['finished']} of {doc['trials']} trials finished "
             f"({c['complete']} complete, {c['pruned']} pruned), {c['failed']} failed, "
             f"{c['interrupted']} interrupted; {doc['seconds']:.1f}s"]
    if doc.get("note"):
        lines.append(doc["note"])
    if not doc["top"]:
        lines.append("no trial has completed yet")
        return "\n".join(lines)
    keys = list(doc["top"][0]["params"])
    header = ["trial", "val acc", "epochs", "time", *keys, "run dir"]
    rows = [header]
    for r in doc["top"]:
        rows.append([str(r["number"]), percent(r["val_accuracy"]), str(r["epochs"] if r["epochs"] is not None else "-"),
                     "-" if r["seconds"] is None else f"{r['seconds']:.1f}s",
                     *(shown_value(r["params"].get(k)) for k in keys), shown_path(r["run_dir"] or "-")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["", *("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows), ""]
    best = doc["best"]
    test = ("test " + percent(best["test_accuracy"]) if best["test_accuracy"] is not None
            else "test accuracy not measured here (its run dir is "
            + (f"on {one_line(best['host'], 60)})" if best["host"] else "not on this machine)"))
    lines.append(f"best trial {best['number']}: val {percent(best['val_accuracy'])}, {test}")
    if doc.get("best_model"):
        lines.append(f"best model {shown_path(doc['best_model'])}; evaluate it with: "
                     f"bp evaluate {shell_word(doc['best_model'])}")
    lines.append(f"best config {doc['best_config']}; retrain with: {doc['retrain']}")
    return "\n".join(lines)
