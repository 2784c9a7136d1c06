"""Pure-JAX image degradations (static shapes, jit-able, batched) and pipelines built from them.

Importing the package registers every degradation kind (`pipelines.KINDS`).
"""

from condsr_jax.degrade import bicubic, classic, learned, realesrgan  # register their kinds
from condsr_jax.degrade import pipelines
from condsr_jax.degrade.color import rgb_to_gray
from condsr_jax.degrade.filters import filter2d, usm_sharp
from condsr_jax.degrade.jpeg import diff_jpeg
from condsr_jax.degrade.kernels import (KERNEL_TYPES, bivariate_gaussian_kernel,
                                        generalized_gaussian_kernel, kernel_from_params,
                                        plateau_kernel, sinc_kernel)
from condsr_jax.degrade.matlab import imresize_matlab
from condsr_jax.degrade.noise import (add_gaussian_noise, add_poisson_noise, gaussian_noise,
                                      poisson_noise)
from condsr_jax.degrade.resize import apply_resize_matrices, interpolate, resize_matrix
from condsr_jax.degrade.sampling import (random_blur_kernel_params, random_final_sinc_params,
                                         random_mixed_kernel_params)
from condsr_jax.degrade.wavelet import haar_dwt
