"""cardamage: how badly a car is damaged, where, and what kind of damage, from a photo."""

__version__ = "0.1.0"
