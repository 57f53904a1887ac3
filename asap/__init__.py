"""asap: a PyTorch toolkit for fast image synthesis (ASAPNet, SPADE, StyleGAN2 and friends)."""

__version__ = "0.1.0"
