"""condsr_jax: degradation-aware (blind, real-world) image super-resolution in JAX/Flax."""

from condsr_jax.inference import Upscaler, load_model

__all__ = ['Upscaler', 'load_model']
__version__ = '0.1.0'
