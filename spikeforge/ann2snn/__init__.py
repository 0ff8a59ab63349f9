"""ANN -> SNN conversion by rate coding (Diehl et al. 2015, Rueckauer et al. 2017).

``snn = Converter(dataloader=train_loader, mode='max')(ann)`` traces ``ann`` with ``torch.fx``, folds BatchNorm,
calibrates one scale per ReLU-like activation and replaces each by soft-reset IF neurons between voltage
scalers; ``evaluate(snn, test_loader, [8, 16, 32])`` gives the accuracy at several T from one simulation.
SpikingJelly 2.0's spelling, ``Converter(recipe=RateCodingRecipe(dataloader=train_loader, mode='Max')).convert(ann)``,
builds the same network (:mod:`.recipes`).
"""

from .converter import Converter
from .evaluate import evaluate, plot_accuracy_vs_T
from .fold import bn_affine, fold_batchnorm, fold_conv_bn
from .modules import (
    ChannelAffine,
    ConversionIFNode,
    IFActivation,
    MembraneReadout,
    SpikingMaxPool,
    TiledAvgPool2d,
    VoltageScaler,
)
from .observe import ActivationObserver
from .recipes import ConversionRecipe, FXConversionRecipe, RateCodingRecipe
from .result import ConvertedSNN
from .tracing import UnsupportedNodeError, trace

__all__ = [
    "Converter",
    "ConvertedSNN",
    "UnsupportedNodeError",
    "fold_batchnorm",
    "trace",
    "evaluate",
    "plot_accuracy_vs_T",
    "VoltageScaler",
    "ConversionIFNode",
    "IFActivation",
    "SpikingMaxPool",
    "TiledAvgPool2d",
    "MembraneReadout",
    "ChannelAffine",
    "fold_conv_bn",
    "bn_affine",
    "ActivationObserver",
    "RateCodingRecipe",
    "FXConversionRecipe",
    "ConversionRecipe",
]
