"""Input validation shared by the `theory` functions, and by `sim` for the same rules.

Every check runs on *concrete* inputs only (Python numbers, numpy arrays, concrete JAX arrays).
Under `jax.jit`/`vmap` the inputs are tracers whose values are unknown at trace time; there only
static facts (dtype, shape) are checked and value checks are skipped, so validation never breaks
compilation. Callers that need value checks inside compiled code validate before entering it.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

# Tolerance for "mu sums to 1"; loose enough for float32 inputs.
_MU_SUM_TOL = 1e-6


def is_concrete(x) -> bool:
    """True when `x` has known values (not a JAX tracer)."""
    return not isinstance(x, jax.core.Tracer)


def _describe(x) -> str:
    arr = np.asarray(x)
    if arr.size == 1:
        return repr(arr.reshape(()).item())
    return f"array of shape {arr.shape}"


def _first_bad(arr: np.ndarray, bad: np.ndarray) -> str:
    idx = np.argwhere(bad)[0]
    value = arr[tuple(idx)] if arr.ndim else arr.item()
    where = f" at index {tuple(int(i) for i in idx)}" if arr.ndim else ""
    return f"{value!r}{where}"


def as_float_array(name: str, x):
    """Convert `x` to a floating JAX array (keeps float32/float64; ints become the default float)."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a number or an array of numbers; got {x!r}")
    try:
        arr = jnp.asarray(x)
    except TypeError as err:
        raise TypeError(f"{name} must be a number or an array of numbers; got {x!r}") from err
    if arr.dtype == jnp.bool_ or not (
        jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)
    ):
        raise TypeError(f"{name} must be real-valued; got dtype {arr.dtype}")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr


def _rounding_tolerance(dtype) -> float:
    return 8 * float(jnp.finfo(dtype).eps)


def probability(name: str, p):
    """`p` as a float array in [0, 1] with no NaN.

    Values computed as sums of probabilities can leave [0, 1] by rounding (a softmax success of
    `1 + 2e-16`). Values within `8 eps` of the interval (`eps` of the dtype: about `1.8e-15` in
    float64, `9.5e-7` in float32) are taken as rounding and moved onto it; anything further out,
    or NaN, raises `ValueError` when concrete. Under tracing no error can be raised: rounding-level
    excursions are still moved onto [0, 1] and other values pass through unchanged.
    """
    arr = as_float_array(name, p)
    tol = _rounding_tolerance(arr.dtype)
    if is_concrete(arr):
        host = np.asarray(arr)
        if np.all((host >= 0) & (host <= 1)):  # the common case, also false at NaN
            return arr  # nothing to report or move: no device program (each costs a trace at start-up)
        bad = ~((host >= -tol) & (host <= 1 + tol))  # also catches NaN
        if bad.any():
            raise ValueError(f"{name} must lie in [0, 1] (no NaN); got {_first_bad(host, bad)}")
    # `where`, not `clip`: the gradient inside [0, 1] stays exactly 1, also at the end points
    below = (arr < 0) & (arr >= -tol)
    above = (arr > 1) & (arr <= 1 + tol)
    return jnp.where(below, 0.0, jnp.where(above, 1.0, arr)).astype(arr.dtype)


def finite(name: str, x):
    """`x` as a float array, checked to be finite (when concrete)."""
    arr = as_float_array(name, x)
    if is_concrete(arr):
        host = np.asarray(arr)
        bad = ~np.isfinite(host)
        if bad.any():
            raise ValueError(f"{name} must be finite; got {_first_bad(host, bad)}")
    return arr


def integer(name: str, x, *, minimum: int | None = None):
    """`x` as an integer JAX array, checked to be `>= minimum` (when concrete).

    Floats are refused even when integral (`k=4.0`): a pass@k order is a count.
    """
    if x is None or isinstance(x, bool) or isinstance(x, np.bool_):
        raise TypeError(f"{name} must be an integer; got {x!r}")
    if isinstance(x, numbers.Integral):
        arr = jnp.asarray(int(x))
        host = np.asarray(int(x))
    else:
        if isinstance(x, numbers.Real):
            raise TypeError(f"{name} must be an integer; got {x!r} of type {type(x).__name__}")
        try:
            arr = jnp.asarray(x)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an integer or integer array; got {x!r}") from err
        if arr.dtype == jnp.bool_ or not jnp.issubdtype(arr.dtype, jnp.integer):
            raise TypeError(
                f"{name} must be an integer or integer array; got dtype {arr.dtype} "
                f"({_describe(x) if is_concrete(x) else 'traced'})"
            )
        host = np.asarray(arr) if is_concrete(arr) else None
    if minimum is not None and host is not None:
        bad = host < minimum
        if bad.any():
            raise ValueError(f"{name} must be >= {minimum}; got {_first_bad(host, bad)}")
    return arr


def python_int(name: str, x, *, minimum: int | None = None) -> int:
    """A concrete Python integer (for sizes that set shapes or loop bounds)."""
    if isinstance(x, bool) or not isinstance(x, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer; got {x!r} of type {type(x).__name__}")
    x = int(x)
    if minimum is not None and x < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {x}")
    return x


def prompt_weights(mu, n_prompts: int, dtype, *, name: str = "mu"):
    """The prompt weights `mu` of shape `(..., P)`: uniform when None, else checked.

    Checks (concrete inputs): last axis equals `n_prompts`, entries non-negative and finite,
    each row sums to 1 within 1e-6.
    """
    if mu is None:
        # built on the host: `jnp.full` or `jnp.asarray` would compile a program per shape
        return jax.device_put(np.full((n_prompts,), 1.0 / n_prompts, dtype=dtype))
    arr = as_float_array(name, mu).astype(dtype)
    if arr.ndim == 0 or arr.shape[-1] != n_prompts:
        raise ValueError(
            f"{name} must have {n_prompts} entries on its last axis (one per prompt); got shape {arr.shape}"
        )
    if is_concrete(arr):
        host = np.asarray(arr, dtype=np.float64)
        bad = ~(host >= 0) | ~np.isfinite(host)
        if bad.any():
            raise ValueError(f"{name} must be non-negative and finite; got {_first_bad(host, bad)}")
        sums = host.sum(axis=-1)
        off = np.abs(sums - 1.0) > _MU_SUM_TOL
        if np.any(off):
            raise ValueError(f"{name} must sum to 1; its sum is {np.asarray(sums)[off].ravel()[0]!r}")
    return arr


def same_shape(name_a: str, a, name_b: str, b) -> None:
    """Raise when two arrays that pair entry for entry have different shapes."""
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(f"{name_a} and {name_b} must have the same shape; got {jnp.shape(a)} and {jnp.shape(b)}")


def leading_axis(name: str, x, size: int, other: str) -> None:
    """Raise unless `x.shape[0] == size` (per-prompt arrays pair with `other`)."""
    if jnp.ndim(x) == 0 or jnp.shape(x)[0] != size:
        raise ValueError(
            f"{name} must have a leading axis of length {size} (the prompts of {other}); got shape {jnp.shape(x)}"
        )


def binary_rewards(name: str, rewards):
    """`(P, n)` rewards of sampled answers, `n >= 2`; concrete values must be 0 or 1.

    Bool, integer or float input; the first offending value is named with its prompt and answer.
    """
    if rewards is None or isinstance(rewards, (str, bytes)):
        raise TypeError(f"{name} must be an array of 0/1 rewards of shape (P, n); got {rewards!r}")
    try:
        arr = jnp.asarray(rewards)
    except TypeError as err:
        raise TypeError(f"{name} must be an array of 0/1 rewards of shape (P, n); got {rewards!r}") from err
    if not (
        arr.dtype == jnp.bool_ or jnp.issubdtype(arr.dtype, jnp.integer) or jnp.issubdtype(arr.dtype, jnp.floating)
    ):
        raise TypeError(f"{name} must be bool, integer or float; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (P, n) (prompts, answers); got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError(f"{name} must have at least one prompt; got shape {arr.shape}")
    if arr.shape[1] < 2:
        raise ValueError(
            f"{name} must hold n >= 2 answers per prompt (unbiased estimates need two); got n = {arr.shape[1]}"
        )
    if is_concrete(arr) and arr.dtype != jnp.bool_:
        host = np.asarray(arr)
        bad = ~((host == 0) | (host == 1))  # NaN and inf are bad too
        if bad.any():
            i, j = (int(x) for x in np.argwhere(bad)[0])
            raise ValueError(f"{name} must be 0 or 1; got {host[i, j].item()!r} at prompt {i} (answer {j})")
    return arr


def level(name: str, value) -> float:
    """A nominal confidence level in `(0, 1)` as a Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in (0, 1); got {value!r}")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1) (for example 0.95); got {value!r}")
    return value
