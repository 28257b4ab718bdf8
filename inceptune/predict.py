"""TRANSITIONAL: ``inceptune/__init__.py`` still imports from here; delete this file once it imports from
``inceptune.prediction`` and ``inceptune.evaluate`` (prediction lives in ``prediction.py``, evaluation of a
labelled folder in ``evaluate.py``)."""

from inceptune.evaluate import Evaluation, evaluate_data  # noqa: F401
from inceptune.prediction import Predictions, predict  # noqa: F401
