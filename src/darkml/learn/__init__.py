"""Training shared by all studies (Lightning): modules, data, fit/predict.

Models are plain ``nn.Module``s from each study's registry; everything about optimisation,
checkpoints, resume, logging, AMP and DDP lives here.
"""

from .data import ArrayDataset, make_loader, split_indices
from .modules import ClassifierModule, RegressorModule, count_parameters
from .train import FitResult, fit, load_best, predict

__all__ = [
    "ArrayDataset",
    "make_loader",
    "split_indices",
    "ClassifierModule",
    "RegressorModule",
    "count_parameters",
    "FitResult",
    "fit",
    "load_best",
    "predict",
]
