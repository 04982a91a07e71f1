"""The classifier's statistical text model: features, training, persistence and evaluation."""

from services.classifier.model.examples import Example, ExamplesFile, read_examples_csv
from services.classifier.model.text_model import Explanation, Prediction, TextModel

__all__ = [
    "Example",
    "ExamplesFile",
    "Explanation",
    "Prediction",
    "TextModel",
    "read_examples_csv",
]
