import importlib
import importlib.util
import inspect
import os
import pkgutil
import platform
import subprocess
import sys

import pytest

import inceptune as it


def test_public_names_resolve_to_what_the_export_table_says():
    for name in it.__all__:
        module = it._EXPORTS[name]
        value = getattr(it, name)
        if module is None:  # a module exported as itself (`it.blocks`)
            assert inspect.ismodule(value) and value.__name__ == f"inceptune.{name}", name
            continue
        source = importlib.import_module(f"inceptune.{module}")
        assert value is getattr(source, name), name
        assert name in source.__all__, f"{name} is not in inceptune.{module}.__all__"
        if inspect.isfunction(value) or inspect.isclass(value):
            assert value.__name__ == name, name
            assert value.__module__.startswith(f"inceptune.{module}"), (name, value.__module__)


def test_no_module_is_named_like_an_exported_function():
    modules = {m.name.rsplit(".", 1)[-1] for m in pkgutil.walk_packages(it.__path__, "inceptune.")}
    clashes = {name for name, module in it._EXPORTS.items() if module is not None and name in modules}
    assert clashes == set()


def test_train_and_predict_are_functions_even_after_every_module_is_imported():
    for m in pkgutil.walk_packages(it.__path__, "inceptune."):
        importlib.import_module(m.name)
    assert inspect.isfunction(it.train) and inspect.isfunction(it.predict)
    assert it.train.__module__ == "inceptune.training.runner"
    assert it.predict.__module__ == "inceptune.prediction"


def test_dir_lists_the_public_names_once():
    names = dir(it)
    assert len(names) == len(set(names))
    assert set(it.__all__) <= set(names)
    assert not {"annotations", "importlib", "_importlib"} & set(names)


def test_documented_defaults_match_signatures():
    assert inspect.signature(it.freeze).parameters["batchnorm"].default == "frozen"
    assert inspect.signature(it.load_backbone).parameters["weights"].default == "imagenet"
    assert inspect.signature(it.add_skip).parameters["init"].default == "zeros"
    assert inspect.signature(it.add_skip).parameters["merge"].default == "add"
    assert "Defaults to \"frozen\"" in it.freeze.__doc__


def test_the_cli_and_the_data_layer_import_no_keras():
    code = ("import sys, inceptune, inceptune.cli, inceptune.data, inceptune.recipe, inceptune.evaluate, "
            "inceptune.architectures; print('keras' in sys.modules, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_library_import_prints_no_tensorflow_start_up_noise():
    """`import inceptune` sets TF_CPP_MIN_LOG_LEVEL=2 before TensorFlow loads (absl preamble, cpu_feature_guard)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import inceptune, inceptune.training, tensorflow, importlib.resources as r; print(r.files('tensorflow'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=True)
    assert done.stderr == ""   # TensorFlow 2.21's oneDNN line went past the variable, through absl (_tf_logs)
    assert done.stdout.strip().endswith("tensorflow")   # the module keeps its own loader: its files are found
    # a user's own setting wins
    code = "import os, inceptune; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=dict(env, TF_CPP_MIN_LOG_LEVEL="0"))
    assert done.stdout.strip() == "0"


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's switch is x86-64's")
def test_library_import_turns_onednn_on_unless_the_user_or_tensorflow_came_first():
    """`import inceptune` sets TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow loads, and TensorFlow then runs oneDNN's
    kernels (it turns them on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX); a user's 0 wins; once
    TensorFlow is imported the variable is left alone (it would no longer change anything)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    code = ("import os, inceptune, tensorflow; from tensorflow.python.util import _pywrap_util_port as port; "
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), port.IsMklEnabled())")
    for user, expected in ((None, "1 True"), ("0", "0 False")):
        run_env = env if user is None else dict(env, TF_ENABLE_ONEDNN_OPTS=user)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env,
                              timeout=300, check=True)
        assert done.stdout.split()[-2:] == expected.split(), done.stdout
    # TensorFlow already loaded (a stand-in module: only inceptune's check of sys.modules is under test)
    code = ("import os, sys; sys.modules['tensorflow'] = sys; import inceptune; "
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "None"


def test_tensorflow_start_up_lines_kept_are_those_the_level_shows():
    from inceptune._tf_logs import kept_lines

    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1796290414.852124    1983 port.cc:153] oneDNN custom operations are on.\n"
            "W0000 00:00:1796290414.9    1983 something.cc:1] a warning\n"
            "2026-01-30 22:44:42.456316: I tensorflow/core/platform/cpu_feature_guard.cc:182] optimized\n"
            "E0000 00:00:1796290415.1    1983 cuda.cc:7] an error\n"
            "/x/y.py:3: UserWarning: a Python warning\n")
    lines = text.splitlines(keepends=True)
    assert kept_lines(text, 0) == text
    assert kept_lines(text, 1) == "".join(lines[i] for i in (2, 4, 5))
    assert kept_lines(text, 2) == "".join(lines[i] for i in (4, 5))
    assert kept_lines(text, 3) == lines[5]
