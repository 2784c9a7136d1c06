"""Per-method training state and pure step functions, plugged into the shared loop in `condsr_jax.train`."""
