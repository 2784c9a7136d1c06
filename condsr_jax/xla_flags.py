"""XLA:CPU settings measured faster for this project's networks, applied by the entry points.

Library users call `tune_xla_cpu()` themselves (before JAX starts its CPU backend); importing
`condsr_jax` changes nothing in the process.
"""

import importlib.metadata
import os


def tune_xla_cpu() -> bool:
  """Routes XLA:CPU convolutions to its own (Eigen) kernels instead of YNNPACK's.

  On jaxlib 0.10 this made forward passes 1.2-1.7x and EDSR training steps 2x faster (see
  benchmarks/). XLA reads XLA_FLAGS when the backend starts, so call this before the first
  computation. It does nothing when the user sets the option, sets CONDSR_JAX_KEEP_XLA_FLAGS, or
  runs a jaxlib it was not measured on (an unknown flag aborts XLA). Returns whether it set it.
  """
  flags = os.environ.get('XLA_FLAGS', '')
  if os.environ.get('CONDSR_JAX_KEEP_XLA_FLAGS') or 'ynn_fusion_type' in flags:
    return False
  try:
    version = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return False
  if not version.startswith('0.10.'):
    return False
  os.environ['XLA_FLAGS'] = (
      f'{flags} --xla_cpu_experimental_ynn_fusion_type=-individual_convolution'.strip())
  return True
