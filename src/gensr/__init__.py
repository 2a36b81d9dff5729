"""GenSR-Pref: multi-metric preference alignment for generative speech restoration."""

__version__ = "0.1.0"
