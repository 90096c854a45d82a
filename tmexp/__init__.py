"""tmexp: Hydra-composed experiment sweeps for Trackmania reinforcement learning."""

__version__ = "0.1.0"
