"""condsr_jax: degradation-aware (blind, real-world) image super-resolution in JAX/Flax."""

import importlib.metadata
import os


def _tune_xla_cpu() -> None:
  """Routes XLA:CPU convolutions to its own (Eigen) kernels instead of YNNPACK's.

  On jaxlib 0.10 this made forward passes 1.2-1.7x and EDSR training steps 2x faster (see
  benchmarks/). XLA reads XLA_FLAGS when the backend starts, so this runs at import; it is
  skipped when the user sets the option, sets CONDSR_JAX_KEEP_XLA_FLAGS, or runs a jaxlib it
  was not measured on (an unknown flag aborts XLA).
  """
  flags = os.environ.get('XLA_FLAGS', '')
  if os.environ.get('CONDSR_JAX_KEEP_XLA_FLAGS') or 'ynn_fusion_type' in flags:
    return
  try:
    version = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return
  if version.startswith('0.10.'):
    os.environ['XLA_FLAGS'] = (
        f'{flags} --xla_cpu_experimental_ynn_fusion_type=-individual_convolution'.strip())


_tune_xla_cpu()

from condsr_jax.inference import Upscaler, load_model  # pylint: disable=g-import-not-at-top

__all__ = ['Upscaler', 'load_model']
__version__ = '0.1.0'
