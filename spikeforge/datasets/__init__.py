"""Data sets read from their original files, with no torchvision dependency.

``MNIST`` and ``FashionMNIST`` read the four gzip'd IDX files, check their md5 against the published
sums, and give either a ``torch.utils.data.Dataset`` (``train=``, ``transform=``) or, through
``as_tensors()``, the whole split as two tensors, which is what the fast training loops use.
"""

from .cifar10 import CIFAR10
from .mnist import MNIST, DatasetFileError, FashionMNIST, read_idx

__all__ = ["MNIST", "FashionMNIST", "CIFAR10", "DatasetFileError", "read_idx"]
