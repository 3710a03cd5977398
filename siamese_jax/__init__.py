"""siamese_jax: Siamese and metric-learning networks as pure JAX/Flax functions."""

__version__ = "0.1.0"
