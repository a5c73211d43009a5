"""faceverify: reproducible deep face verification (Wen et al. 2016 and metric-learning losses)."""

__version__ = "0.1.0"
