"""condsr_jax: degradation-aware (blind, real-world) image super-resolution in JAX/Flax."""

from condsr_jax.inference import Upscaler, load_model
from condsr_jax.xla_flags import tune_xla_cpu

__all__ = ['Upscaler', 'load_model', 'tune_xla_cpu']
__version__ = '0.1.0'
