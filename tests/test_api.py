import inspect

import inceptune as it


def test_public_names_resolve():
    for name in it.__all__:
        assert getattr(it, name) is not None, name


def test_train_and_predict_are_functions_even_after_their_modules_are_imported():
    import inceptune.predict  # noqa: F401
    import inceptune.train  # noqa: F401

    assert inspect.isfunction(it.train) and inspect.isfunction(it.predict)
    assert it.train.__module__ == "inceptune.train"


def test_documented_defaults_match_signatures():
    assert inspect.signature(it.freeze).parameters["batchnorm"].default == "frozen"
    assert inspect.signature(it.load_backbone).parameters["weights"].default == "imagenet"
    assert inspect.signature(it.add_skip).parameters["init"].default == "zeros"
    assert inspect.signature(it.add_skip).parameters["merge"].default == "add"
    assert "Defaults to \"frozen\"" in it.freeze.__doc__
