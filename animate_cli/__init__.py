"""animate-face: few-shot talking heads (Zakharov et al. 2019) from the command line."""

__version__ = "0.1.0"
