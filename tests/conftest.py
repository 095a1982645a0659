"""Test configuration: float64 everywhere, hypothesis without deadlines (JAX compiles lazily), and
no persistent compilation cache (tests of the command must not write to the user's cache folder;
tests/test_compile_cache.py turns it on in its own subprocesses)."""

import os

os.environ.setdefault("PASSK_NO_COMPILE_CACHE", "1")

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "default",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
