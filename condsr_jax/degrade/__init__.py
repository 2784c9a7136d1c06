"""Pure-JAX image degradations (static shapes, jit-able, batched) and the pipelines built from them."""
