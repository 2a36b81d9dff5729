"""Generative restorers (AR, MGM, FM) on a shared STFT front end and a trained spectral codec.

`Restorer` (models.restorer) is the interface the sampling, alignment and evaluation stages use.
"""

from gensr.models.registry import PARADIGMS, load_restorer, restorer_class
from gensr.models.restorer import Restorer

__all__ = ["PARADIGMS", "Restorer", "load_restorer", "restorer_class"]
