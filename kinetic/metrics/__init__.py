"""Sample-quality metrics: sliced Wasserstein, fd-digits, FID (user-supplied Inception weights).

All take plain tensors (or numpy arrays) and return Python floats; nothing prints or downloads.

- ``sliced_wasserstein(x, y)``: SW_2 between two sample sets (any shape, flattened).
- ``fd_digits(samples, clamp=True)``: Frechet distance in the feature space of kinetic's own small
  digits classifier (trained once, deterministically, cached on disk). Not FID. Samples are clamped
  to the data range [-1, 1] first unless ``clamp=False``.
- ``out_of_range_fraction(samples)``: the share of values outside [-1, 1] (what clamping changes).
- ``fid_from_samples(samples, reference, weights_path)``: FID with the TorchScript
  ``inception-2015-12-05.pt`` that the user provides.
- ``frechet_distance`` / ``frechet_distance_from_features``: the shared Gaussian formula.
- ``class_accuracy(samples, labels)`` / ``fd_digits_per_class(samples, labels)``: conditional
  generation on digits, with the same classifier (`kinetic.metrics.conditional`).
"""

from .conditional import class_accuracy, classify_digits, fd_digits_per_class, inpainting_inputs, right_half_mask
from .data_range import DATA_RANGE, clamp_to_data_range, out_of_range_fraction
from .digits_classifier import (
    CLASSIFIER_VERSION,
    DigitsClassifier,
    default_cache_dir,
    digits_features,
    fd_digits,
    load_digits_classifier,
    train_digits_classifier,
)
from .fid import (
    INCEPTION_FILENAME,
    INCEPTION_URL,
    compute_statistics,
    fid_from_samples,
    fid_from_statistics,
    images_to_uint8,
    inception_features,
    load_inception,
    load_statistics,
    save_statistics,
)
from .frechet import MetricError, feature_statistics, frechet_distance, frechet_distance_from_features
from .swd import sliced_wasserstein

__all__ = [
    "MetricError",
    "METRICS",
    "sliced_wasserstein",
    "frechet_distance",
    "frechet_distance_from_features",
    "feature_statistics",
    "fd_digits",
    "digits_features",
    "classify_digits",
    "class_accuracy",
    "fd_digits_per_class",
    "right_half_mask",
    "inpainting_inputs",
    "DATA_RANGE",
    "clamp_to_data_range",
    "out_of_range_fraction",
    "load_digits_classifier",
    "train_digits_classifier",
    "DigitsClassifier",
    "CLASSIFIER_VERSION",
    "default_cache_dir",
    "fid_from_samples",
    "fid_from_statistics",
    "compute_statistics",
    "save_statistics",
    "load_statistics",
    "load_inception",
    "inception_features",
    "images_to_uint8",
    "INCEPTION_FILENAME",
    "INCEPTION_URL",
]

#: Metric names of ``kinetic evaluate --metric`` that live here ("nll" is kinetic.likelihood's).
METRICS = ("fd-digits", "fid", "swd")
