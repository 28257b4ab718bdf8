"""The `inceptune` command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 success, 2 bad input (usage, recipe, data, selector, model file), 1 unexpected failure, 130
interrupted, 141 stdout closed early (`| head`). Errors print one paragraph to stderr; `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
import textwrap
import time
import traceback

from inceptune import __version__
from inceptune.errors import DataError, InceptuneError

# Each command imports the library modules it needs when it runs, so that `--help`, `--version`, `backbones` and
# `data summary` load neither TensorFlow nor Keras (`--help` and `--version` not even NumPy), and answer in a
# fraction of a second. `inceptune/__init__.py` quiets TensorFlow's C++ start-up logs (TF_CPP_MIN_LOG_LEVEL).

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__all__ = ["main"]


def _print_error(kind: str, message: str, width: int = 110) -> None:
    """`kind: message` as one paragraph wrapped at `width`; a `quoted command` stays on one line, to be copied."""
    words = re.findall(r"\S*`[^`]*`\S*|\S+", f"{kind}: {' '.join(str(message).split())}")
    lines = [""]
    for word in words:
        if lines[-1] and len(lines[-1]) + 1 + len(word) > width:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}" if lines[-1] else word
    sys.stderr.write("\n".join(lines) + "\n")


# === commands ===

def _cmd_backbones(args) -> int:
    # static data (ArchSpec.block_names, checked against the built models by a test); the keras.applications names
    # are read from Keras's API file: neither builds a model nor imports Keras
    from inceptune.architectures import ARCHITECTURES, application_names

    if args.json:
        out = [{"name": s.name, "default_size": s.default_size, "min_size": s.min_size, "preprocess": s.preprocess,
                "description": s.description, "blocks": list(s.block_names)} for s in ARCHITECTURES.values()]
        print(json.dumps({"architectures": out, "keras_applications": application_names()}, indent=2))
        return 0
    for spec in ARCHITECTURES.values():
        print(f"{spec.name}  (default {spec.default_size}px, min {spec.min_size}px, preprocessing {spec.preprocess})")
        print(f"  {spec.description}")
        print(textwrap.fill("  blocks: " + " ".join(spec.block_names), width=110, subsequent_indent="    "))
    print(textwrap.fill("also accepted (no block map: every layer is a block): any keras.applications name: "
                        + ", ".join(application_names()) + "; or a saved .keras model.", width=110))
    return 0


def _load_for_inspect(target: str, weights: str, image_size):
    from inceptune.architectures import load_backbone
    from inceptune.models import load_model

    if os.path.isdir(target) or target.endswith(".keras"):
        return load_model(target)
    return load_backbone(target, weights=weights, image_size=image_size)


def _cmd_inspect(args) -> int:
    from inceptune import freezing, selectors

    if args.freeze is not None:
        selectors.parse(args.freeze)  # syntax errors before the (slow) model build
    model = _load_for_inspect(args.model, args.weights, args.image_size)
    if args.cut is not None:
        from inceptune.cut import cut_backbone

        full = model.count_params()
        model = cut_backbone(model, args.cut, key="--cut")
        print(f"cut at {args.cut!r}: {len(model.layers)} layers and {model.count_params():,} of {full:,} "
              "parameters remain")
    if args.freeze is not None:
        rep = freezing.freeze(model, args.freeze, batchnorm=args.batchnorm)
    elif args.train is not None:
        rep = freezing.unfreeze(model, args.train, batchnorm=args.batchnorm)
    else:
        rep = freezing.report(model, batchnorm="")
    if args.json:
        print(rep.to_json(layers=args.layers))
    else:
        print(rep)
        if args.layers:
            for row in rep.layers:
                flag = "train" if row["trainable"] else "frozen"
                print(f"  {row['block']:<12} {row['name']:<40} {row['type']:<22} {flag:<6} "
                      f"{row['trainable_params'] + row['frozen_params']:>10,}")
    return 0


def _cmd_train(args) -> int:
    from inceptune.training import train

    if args.recipe is None and not args.resume:
        raise _usage("train needs a RECIPE, an image folder or a CSV (or --resume with --out RUN_DIR)", "train")
    if args.resume and args.out is None:
        raise _usage("--resume needs --out RUN_DIR: the run folder to continue", "train")
    overrides = [*args.set, *([f"distribute.strategy={args.strategy}"] if args.strategy else [])]
    run = train(args.recipe, out=args.out, overrides=overrides, resume=args.resume, force=args.force,
                verbose=not args.quiet, backbone=args.backbone, epochs=args.epochs, image_size=args.image_size)
    if args.quiet and run.metrics:  # --quiet: the summary only
        from inceptune.training.records import summary_table

        print(summary_table(run.history, run.metrics).strip("\n"))
    print(f"run folder: {run.dir}")
    return 0


def _cmd_lr_find(args) -> int:
    from inceptune.lr_range import lr_find

    if args.recipe is None and args.from_run is None:
        raise _usage("lr-find needs a RECIPE (or --from RUN to use the run's recipe.yaml)", "lr-find")
    result = lr_find(args.recipe, args.stage, from_run=args.from_run, out=args.out, overrides=args.set,
                     start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps, verbose=not args.quiet)
    print(result.summary())
    print(f"wrote {result.png_path} and {result.csv_path}")
    return 0


def _cmd_recipe_init(args) -> int:
    from inceptune.recipe import starter_recipe

    sys.stdout.write(starter_recipe(args.backbone))
    return 0


def _cmd_recipe_show(args) -> int:
    from inceptune.recipe import load_recipe, recipe_yaml

    sys.stdout.write(recipe_yaml(load_recipe(args.recipe, args.set)))
    return 0


def _cmd_data_summary(args) -> int:
    from inceptune import data as _data

    split = _data.SplitConfig(val=args.val, test=args.test, seed=args.seed, method=args.method)
    info = _data.summary(args.source, split=split, min_side=args.min_side)
    print(json.dumps(info, indent=2, default=str) if args.json else _data.format_summary(info))
    return 0


def _cmd_predict(args) -> int:
    from inceptune.prediction import predict

    result = predict(args.model, args.inputs, top_k=args.top_k, batch_size=args.batch_size, tta=args.tta)
    for path, reason in result.skipped:
        _print_error("skipped", f"{path}: {reason}")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif args.csv:
        sys.stdout.write(result.to_csv())
    else:
        for p in result:
            print(f"{p['path']}  " + "  ".join(f"{label} {prob:.4f}" for label, prob in p["top"]))
    if not len(result):
        raise DataError(
            f"no image could be predicted: {len(result.skipped)} file(s) skipped (reasons above) among "
            f"{', '.join(args.inputs)}. HINT: pass image files, or folders that hold images "
            "(jpg, png, bmp, gif, tiff, webp).")
    if not (args.json or args.csv):
        print(f"{len(result)} image(s) predicted" + (f", {len(result.skipped)} skipped" if result.skipped else ""))
    return 0


def _cmd_evaluate(args) -> int:
    from inceptune.evaluate import evaluate_data, format_evaluation

    ev = evaluate_data(args.model, args.data, args.out, batch_size=args.batch_size, split=args.split, tta=args.tta,
                       force=args.force, progress=not args.quiet)
    for path, reason in ev.skipped:
        _print_error("skipped", f"{path}: {reason}")
    print(format_evaluation(ev))
    return 0


_EXPORT_NAMES = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}


def _default_export_path(target: str, fmt: str):
    """RUN_DIR/export/model.<ext>, or <folder>/export/<stem>.<ext> for a .keras file."""
    from pathlib import Path

    path = Path(target)
    name = _EXPORT_NAMES[fmt]
    if path.is_dir():
        return path / "export" / name
    stem = path.stem
    return path.parent / "export" / (stem + name[len("model"):] if fmt != "savedmodel" else f"{stem}_saved_model")


def _export_check_images(target: str, model):
    """Up to 4 real images of the run (test split first) for the export check; None: random images."""
    import csv as _csv
    from pathlib import Path

    import numpy as np

    from inceptune import data as _data

    manifest = Path(target) / "manifest.csv" if Path(target).is_dir() else None
    if manifest is None or not manifest.is_file():
        return None
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(_csv.DictReader(fh))
    rows.sort(key=lambda r: r.get("split") != "test")
    size = tuple(model.inputs[0].shape[1:3])
    images = []
    for row in rows:
        if len(images) == 4:
            break
        try:
            images.append(_data.load_image(row["path"], size))
        except Exception:  # noqa: BLE001 - a moved or damaged file just is not used for the check
            continue
    return np.stack(images).astype("float32") if images else None


def _cmd_export(args) -> int:
    from pathlib import Path

    from inceptune.export import export_model, verify_export
    from inceptune.models import load_labels, load_model

    model = load_model(args.model)
    labels = load_labels(args.model)
    out = Path(args.out) if args.out else _default_export_path(args.model, args.format)
    images = _export_check_images(args.model, model)
    t0 = time.perf_counter()
    path = export_model(model, out, format=args.format, labels=labels, verify_images=images, force=args.force)
    check = verify_export(path, args.format, model, images)
    print(f"exported {args.format} in {time.perf_counter() - t0:.1f}s: {path}" + ("" if labels is None else
          f" (labels.json: {path / 'labels.json' if args.format == 'savedmodel' else path.parent / 'labels.json'})"))
    print(f"verified: {check}" + (" on real images of the run" if images is not None else " on random images"))
    return 0


def _cmd_cv(args) -> int:
    from inceptune.cv import cross_validate, format_cv

    result = cross_validate(args.recipe, args.folds, args.out, overrides=args.set, verbose=not args.quiet,
                            force=args.force)
    if args.quiet:
        print(format_cv(result))
    print(f"cv folder: {result['dir']}")
    return 0


def _cmd_demo(args) -> int:
    from inceptune.demo import format_demo, run_demo

    result = run_demo(args.out, quick=args.quick, force=args.force, verbose=not args.quiet)
    if args.quiet:
        print(format_demo(result))
    return 0


# Errors of the file system that the user can fix (a folder they chose, a full disk): exit code 2, one paragraph.
_WRITE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exhausted",
                 errno.EFBIG: "the file would exceed the file size limit", errno.EROFS: "the file system is read-only",
                 errno.ENOTDIR: "a part of the path is a file, not a folder"}
_ACCESS_ERRNOS = (errno.EACCES, errno.EPERM)


def _os_error_text(exc: OSError) -> str | None:
    """The message of a file-system error the user can fix, or None for any other OSError."""
    where = exc.filename or "a file"
    done = ("Files inceptune had already written are complete (every write is atomic); a run that had not "
            "completed an epoch was removed, a later one can be continued with --resume.")
    if exc.errno in _WRITE_ERRNOS:
        hint = ("free space on that disk, or choose an --out folder on another one (the feature cache follows "
                "INCEPTUNE_CACHE_DIR)" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
                else "choose an --out folder you can write to")
        return f"cannot write {where}: {_WRITE_ERRNOS[exc.errno]} ({exc.strerror}). {done} HINT: {hint}."
    if exc.errno in _ACCESS_ERRNOS:
        return (f"permission denied: {where} ({exc.strerror}). {done} HINT: check the permissions of the files you "
                "pass, and choose an --out folder you can write to.")
    return None


def _usage(text: str, command: str):
    """A usage error of `inceptune COMMAND` (e.g. "train", "data summary"), pointing at that command's help."""
    return InceptuneError(f"{text}. HINT: run `inceptune {command} --help` for the options.")


# === parser ===

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inceptune",
        description="Transfer learning with Inception-family classifiers on Keras 3.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--trust-model", action="store_true",
                        help="load .keras files with Keras's safe mode off (only files you trust: a Lambda layer "
                             "runs its Python code on load)")
    parser.add_argument("--version", action="version", version=f"inceptune {__version__}")
    sub = _subcommands(parser, "command", metavar="COMMAND")
    for add in (_add_model_commands, _add_data_commands, _add_training_commands, _add_inference_commands,
                _add_study_commands):
        add(sub)
    return parser


def _subcommands(parser, dest: str, metavar: str = "SUBCOMMAND"):
    sub = parser.add_subparsers(dest=dest, metavar=metavar)
    sub.required = True
    return sub


def _add_model_commands(sub) -> None:
    """The subcommands backbones, inspect."""
    p = sub.add_parser("backbones", help="list architectures and their blocks")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_backbones)

    p = sub.add_parser("inspect", help="per-block table: layers, output shapes, trainable/frozen parameters")
    p.add_argument("model", metavar="MODEL|BACKBONE", help="a backbone name, a .keras file or a run folder")
    p.add_argument("--weights", default="none",
                   help="imagenet | none | PATH (default: none: the structure does not depend on the weights)")
    p.add_argument("--image-size", type=int, default=None, help="input side in pixels (default: the architecture's)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--freeze", metavar="SELECTOR", help="freeze these layers, train the rest (e.g. through:mixed7)")
    g.add_argument("--train", metavar="SELECTOR", help="train these layers, freeze the rest (e.g. head,from:mixed9)")
    p.add_argument("--batchnorm", default="frozen", choices=("frozen", "follow", "train"),
                   help="BatchNorm policy (default: frozen)")
    p.add_argument("--cut", metavar="BLOCK", help="drop every layer above this block (as model.cut), e.g. mixed7")
    p.add_argument("--layers", action="store_true", help="also list every layer")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_inspect)


def _add_data_commands(sub) -> None:
    """The subcommands data summary."""
    p = sub.add_parser("data", help="dataset tools")
    dsub = _subcommands(p, "data_command")
    q = dsub.add_parser("summary", help="class counts per split, skipped files, duplicates, leakage")
    q.add_argument("source", metavar="DIR|CSV", help="a class-per-folder directory or a CSV manifest")
    q.add_argument("--val", type=float, default=0.15, help="validation fraction (default 0.15)")
    q.add_argument("--test", type=float, default=0.15, help="test fraction (default 0.15)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--method", default="stable-hash", choices=("stable-hash", "stratified"))
    q.add_argument("--min-side", type=int, default=16, help="skip images smaller than this (default 16)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd_data_summary)


def _add_training_commands(sub) -> None:
    """The subcommands train and recipe (init, show)."""
    p = sub.add_parser("train", help="staged fine-tuning into a run folder, from a recipe or straight from a folder")
    p.add_argument("recipe", metavar="RECIPE|DIR|CSV", nargs="?",
                   help="a recipe YAML file, or an image folder (one sub-folder per class) or CSV: the default "
                        "recipe, sized to the data")
    p.add_argument("--out", help="run folder (default runs/<recipe or folder>-<time>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set stages[1].lr=1e-5 (repeatable)")
    p.add_argument("--backbone", help="with DIR|CSV: the backbone (default inception_v3)")
    p.add_argument("--epochs", type=int, help="with DIR|CSV: epochs of each stage (default: chosen from the data)")
    p.add_argument("--image-size", type=int, help="with DIR|CSV: input side in pixels (default: the backbone's)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last complete epoch")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--strategy", metavar="S", help="distribute.strategy: none | auto | mirrored | multi-worker "
                                                   "(several GPUs or machines; see README 'Beyond one device')")
    p.add_argument("--quiet", action="store_true", help="no progress: only the summary table and the run folder")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("lr-find", help="learning-rate range test of one stage (seconds on a cached stage)")
    p.add_argument("recipe", metavar="RECIPE", nargs="?", help="recipe YAML file (default with --from: the run's)")
    p.add_argument("--stage", metavar="NAME|N", help="the stage, by name or 0-based number (default: the first)")
    p.add_argument("--from", dest="from_run", metavar="RUN",
                   help="start from this run folder's last checkpoint (read only) instead of training the earlier "
                        "stages first")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    p.add_argument("--out", default=".", metavar="DIR", help="folder for lr_find.png and lr_find.csv (default: .)")
    p.add_argument("--steps", type=int, default=100, help="batches in the sweep (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--quiet", action="store_true", help="print only the suggestion")
    p.set_defaults(func=_cmd_lr_find)

    p = sub.add_parser("recipe", help="recipe tools: a commented starting recipe, or a recipe resolved")
    rsub = _subcommands(p, "recipe_command")
    q = rsub.add_parser("init", help="print a commented starting recipe (inceptune recipe init > recipe.yaml)")
    q.add_argument("--backbone", default="inception_v3", help="backbone of the recipe (default inception_v3)")
    q.set_defaults(func=_cmd_recipe_init)
    q = rsub.add_parser("show", help="print a recipe with every default filled in and paths made absolute")
    q.add_argument("recipe", metavar="RECIPE", help="recipe YAML file")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    q.set_defaults(func=_cmd_recipe_show)


_TTA_HELP = ("test-time augmentation: average over flip (mirror), K views (the image and K-1 crops), crops (6) or "
             "flip+crops; never flip for digits, text or anything with handedness (default: none)")


def _add_inference_commands(sub) -> None:
    """The subcommands evaluate, predict, export."""
    p = sub.add_parser("evaluate", help="metrics and report of a trained model on a labelled folder or CSV")
    p.add_argument("model", metavar="RUN_DIR|MODEL", help="a run folder or a .keras file (with labels.json beside it)")
    p.add_argument("--data", required=True, metavar="DIR|CSV",
                   help="a folder with one sub-folder per class, or a CSV path,label[,split]")
    p.add_argument("--out", help="output folder (default RUN_DIR/eval-<data folder name>)")
    p.add_argument("--split", choices=("train", "val", "test"),
                   help="with a CSV that has a split column: only this split (e.g. test of a manifest.csv)")
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    p.add_argument("--tta", metavar="T", help=_TTA_HELP)
    p.add_argument("--force", action="store_true", help="write into an existing non-empty --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes of image files and folders")
    p.add_argument("model", metavar="RUN_DIR|MODEL", help="a run folder or a .keras file (with labels.json beside it)")
    p.add_argument("inputs", metavar="IMAGE_OR_DIR", nargs="+", help="image files and folders (scanned recursively)")
    p.add_argument("--top-k", type=int, default=1, help="classes per image (default 1)")
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    p.add_argument("--tta", metavar="T", help=_TTA_HELP)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print JSON")
    g.add_argument("--csv", action="store_true", help="print CSV: path,label_1,probability_1,...")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="export to keras, savedmodel, tflite or onnx, verified by its own runtime")
    p.add_argument("model", metavar="RUN_DIR|MODEL", help="a run folder or a .keras file")
    p.add_argument("--format", required=True, choices=("keras", "savedmodel", "tflite", "onnx"))
    p.add_argument("--out", metavar="PATH", help="output file or folder (default RUN_DIR/export/model.<ext>)")
    p.add_argument("--force", action="store_true", help="replace an existing export")
    p.set_defaults(func=_cmd_export)


def _add_study_commands(sub) -> None:
    """The subcommands cv and demo."""
    p = sub.add_parser("cv", help="stratified k-fold cross-validation of a recipe (the test split held out)")
    p.add_argument("recipe", metavar="RECIPE", help="recipe YAML file")
    p.add_argument("--folds", type=int, required=True, metavar="K", help="number of folds (>= 2)")
    p.add_argument("--out", help="output folder (default runs/<recipe>-cv-<time>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set stages[1].epochs=3 (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing cv folder")
    p.add_argument("--quiet", action="store_true", help="print only the results")
    p.set_defaults(func=_cmd_cv)

    p = sub.add_parser("demo", help="the whole pipeline offline on bundled real data (handwritten digits)")
    p.add_argument("--out", default="demo_run", help="demo folder (default demo_run)")
    p.add_argument("--quick", action="store_true", help="400 images and fewer epochs (about a minute)")
    p.add_argument("--force", action="store_true", help="replace an earlier demo folder")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=_cmd_demo)


def run() -> None:
    """The `inceptune` command: `main()`, then the process ends at once.

    After a command that used TensorFlow, Python's own shutdown (freeing every object of the run, TensorFlow's
    thread pools) took about 3 s once the last line was printed, with nothing left to write: every file the
    command writes is closed when `main` returns. So stdout and stderr are flushed and the process exits without
    that teardown.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    if "tensorflow" in sys.modules:
        os._exit(code)
    sys.exit(code)


def main(argv=None) -> int:
    """Runs the CLI; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, trust = "--debug" in argv, "--trust-model" in argv  # accepted anywhere on the line
    argv = [a for a in argv if a not in ("--debug", "--trust-model")]
    try:
        args = parser.parse_args(argv)
        args.debug = debug
    except SystemExit as exc:  # argparse: 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    try:
        from inceptune.models import trusted_models

        with trusted_models(trust):
            return int(args.func(args) or 0)
    except InceptuneError as exc:
        if args.debug:
            traceback.print_exc()
        _print_error("error", str(exc))
        return 2
    except KeyboardInterrupt:
        _print_error("interrupted", "stopped by the user; files already written are complete.")
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`inceptune backbones | head`): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it
    except OSError as exc:
        if args.debug:
            traceback.print_exc()
        text = _os_error_text(exc)
        if text is None:
            _print_error("unexpected error", f"{type(exc).__name__}: {exc}. This is a bug or an environment problem; "
                         "run the same command with --debug for the traceback.")
            return 1
        _print_error("error", text)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence of the CLI
        if args.debug:
            traceback.print_exc()
        _print_error("unexpected error", f"{type(exc).__name__}: {exc}. This is a bug or an environment problem; "
                     "run the same command with --debug for the traceback.")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
