"""A small decoder-only transformer in plain JAX (pre-layer-norm, causal, learned positions).

Parameters are a nested dict of arrays; :func:`init` builds it from a key and a
:class:`ModelConfig`, :func:`apply` maps one unbatched token sequence `(T,)` to next-token logits
`(T, V)` (callers `vmap` over sequences). Block `l` computes

    h = h + Attn(LN(h)),   h = h + MLP(LN(h)),   logits = LN(h) W_out,

with `Attn` causal multi-head softmax attention and `MLP(x) = W_2 gelu(W_1 x + b_1) + b_2`.
Shape comments use `T` sequence length, `D` model width, `H` heads, `E = D/H` head width,
`F` MLP width, `V` vocabulary size.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

__all__ = ["ModelConfig", "init", "apply", "param_count", "LAST_LAYER"]

# The parameters of the "last layer" used by the last-layer agreement proxy: the output head.
LAST_LAYER = ("unembed",)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the transformer; `d_model` must be divisible by `n_heads`."""

    vocab_size: int
    max_len: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_mlp: int = 128

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "d_model", "n_heads", "n_layers", "d_mlp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer; got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")


def _dense(key, n_in, n_out, dtype):
    # Scaled so activations keep unit variance at init (fan-in scaling).
    return jax.random.normal(key, (n_in, n_out), dtype) / math.sqrt(n_in)  # (n_in, n_out)


def init(key, config: ModelConfig, dtype=jnp.float32) -> dict:
    """Random parameters for `config`: a dict pytree (float32 unless `dtype` says otherwise)."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig; got {type(config).__name__}")
    c = config
    keys = jax.random.split(key, 3 + 4 * c.n_layers)
    params = {
        "embed": 0.5 * jax.random.normal(keys[0], (c.vocab_size, c.d_model), dtype),  # (V, D)
        "pos": 0.5 * jax.random.normal(keys[1], (c.max_len, c.d_model), dtype),  # (T_max, D)
        "ln_f": {"g": jnp.ones((c.d_model,), dtype), "b": jnp.zeros((c.d_model,), dtype)},  # (D,)
        "unembed": _dense(keys[2], c.d_model, c.vocab_size, dtype),  # (D, V)
        "blocks": [],
    }
    for layer in range(c.n_layers):
        k_qkv, k_o, k_1, k_2 = keys[3 + 4 * layer : 7 + 4 * layer]
        params["blocks"].append(
            {
                "ln1": {"g": jnp.ones((c.d_model,), dtype), "b": jnp.zeros((c.d_model,), dtype)},  # (D,)
                "qkv": _dense(k_qkv, c.d_model, 3 * c.d_model, dtype),  # (D, 3D)
                # Residual branches start small so the initial network is close to its embedding.
                "out": _dense(k_o, c.d_model, c.d_model, dtype) / math.sqrt(2 * c.n_layers),  # (D, D)
                "ln2": {"g": jnp.ones((c.d_model,), dtype), "b": jnp.zeros((c.d_model,), dtype)},  # (D,)
                "w1": _dense(k_1, c.d_model, c.d_mlp, dtype),  # (D, F)
                "b1": jnp.zeros((c.d_mlp,), dtype),  # (F,)
                "w2": _dense(k_2, c.d_mlp, c.d_model, dtype) / math.sqrt(2 * c.n_layers),  # (F, D)
                "b2": jnp.zeros((c.d_model,), dtype),  # (D,)
            }
        )
    return params


def param_count(params) -> int:
    """Number of scalar parameters in a parameter pytree."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def _layer_norm(x, ln, eps=1e-5):
    mean = jnp.mean(x, axis=-1, keepdims=True)  # (T, 1)
    var = jnp.var(x, axis=-1, keepdims=True)  # (T, 1)
    return (x - mean) * jax.lax.rsqrt(var + eps) * ln["g"] + ln["b"]  # (T, D)


def _attention(x, block, n_heads):
    t, d = x.shape  # T, D
    e = d // n_heads  # E
    qkv = x @ block["qkv"]  # (T, 3D)
    q, k, v = jnp.split(qkv, 3, axis=-1)  # 3 x (T, D)
    q = q.reshape(t, n_heads, e).transpose(1, 0, 2)  # (H, T, E)
    k = k.reshape(t, n_heads, e).transpose(1, 0, 2)  # (H, T, E)
    v = v.reshape(t, n_heads, e).transpose(1, 0, 2)  # (H, T, E)
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(e)  # (H, T, T)
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))  # (T, T): position i sees j <= i
    scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)  # (H, T, T)
    attn = jax.nn.softmax(scores, axis=-1)  # (H, T, T)
    mixed = (attn @ v).transpose(1, 0, 2).reshape(t, d)  # (T, D)
    return mixed @ block["out"]  # (T, D)


def _mlp(x, block):
    hidden = jax.nn.gelu(x @ block["w1"] + block["b1"])  # (T, F)
    return hidden @ block["w2"] + block["b2"]  # (T, D)


def apply(params, tokens, config: ModelConfig):
    """Next-token logits for one sequence.

    Args:
      params: the pytree from :func:`init`.
      tokens: integer tokens `(T,)`, `T <= config.max_len`.
      config: the model sizes (static).

    Returns:
      logits `(T, V)`; row `t` scores the token at position `t + 1` given tokens `0..t`.
    """
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one unbatched sequence of shape (T,); got {tokens.shape}")
    t = tokens.shape[0]  # T
    if t > config.max_len:
        raise ValueError(f"tokens has length {t}, above config.max_len={config.max_len}")
    h = params["embed"][tokens] + params["pos"][:t]  # (T, D)
    for block in params["blocks"]:
        h = h + _attention(_layer_norm(h, block["ln1"]), block, config.n_heads)  # (T, D)
        h = h + _mlp(_layer_norm(h, block["ln2"]), block)  # (T, D)
    return _layer_norm(h, params["ln_f"]) @ params["unembed"]  # (T, V)
