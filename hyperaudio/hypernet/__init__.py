"""Hypernetworks: one forward pass turns a sound into target-network parameters (HyperSound, FewSound)."""

from .model import HyperNetwork, build, load_model, save_model

__all__ = ["HyperNetwork", "build", "load_model", "save_model"]
