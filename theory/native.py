"""Compiled CPU kernels, built on first use: the sums of sampled answers in one pass over the scores.

:func:`answer_sums` returns, for rewards `r` `(..., n)` and score vectors `s` `(..., n, D)`,

    G_i = sum_j r_ij s_ij          (..., D)
    Q_i = sum_j r_ij ||s_ij||^2    (...)

the two sums :func:`theory.answer_statistics` needs (SPEC section 10). XLA's CPU backend computes
them as two passes over the scores, the larger part of a run-scale `theory.sampled_critical_k`
(`benchmarks/README.md`, `sampled`): it will not fuse two sums of different shapes over one input
into one loop. The kernel `theory/kernels/answer_sums.cc` (an XLA FFI custom call) reads each
score once; with binary rewards `G_i` equals the XLA formula bit for bit, `Q_i` within rounding
(its squared norms are summed in another order).

Built on first use with the host's C++ compiler (``$CXX``, else ``c++``, ``g++`` or ``clang++``)
against the FFI headers jaxlib ships, into ``$PASSK_NATIVE_DIR`` if set, else
``$XDG_CACHE_HOME/passk-interference/native``, else ``~/.cache/passk-interference/native`` (one
subfolder per CPU kind: the library is built for the host's instruction set), and loaded from
there by later processes (about 4 s to build, milliseconds to load). Written atomically, so
processes building at once do not clash. The folder is trusted: its library is loaded and run.

Where no compiler is found, the build fails, the backend is not the CPU, the dtype is not float32
or float64, or ``PASSK_NO_NATIVE`` is set (any value other than empty or ``0``), callers use the
XLA formulas instead (the same numbers, two passes); :func:`native_status` says which and why.

Under `jit` and `vmap` the kernel is a custom call (batched axes are more prompts); under
differentiation its tangents are the XLA formulas (`dG = sum_j dr_ij s_ij + r_ij ds_ij`,
`dQ = sum_j dr_ij ||s_ij||^2 + 2 r_ij <s_ij, ds_ij>`).
"""

from __future__ import annotations

import ctypes
import hashlib
import inspect
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["NativeStatus", "native_status", "native_dir", "cpu_tag", "usable", "answer_sums_native",
           "NATIVE_DIR_ENV", "DISABLE_NATIVE_ENV"]

NATIVE_DIR_ENV = "PASSK_NATIVE_DIR"
DISABLE_NATIVE_ENV = "PASSK_NO_NATIVE"
_SOURCE = Path(__file__).with_name("kernels") / "answer_sums.cc"
_TARGET = "passk_answer_sums"
_SYMBOL = "PasskAnswerSums"
_BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off")
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class NativeStatus(NamedTuple):
    """Whether the compiled kernel is in use in this process.

    Attributes:
      available: True when :func:`answer_sums_native` runs the compiled kernel on the CPU.
      reason: how it was obtained (`"built"`, `"loaded"`) or why not.
      library: the path of the loaded library, or None.
    """

    available: bool
    reason: str
    library: str | None


def cpu_tag() -> str:
    """`<machine>-<8 hex digits of the CPU flags>` (Linux), or the machine alone elsewhere.

    Code built for the host's instruction set is kept in one folder per tag, so that a cache folder
    shared between different machines never hands one machine's code to another.
    """
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line.split(":", 1)[-1].strip()
                    break
    except OSError:
        pass
    machine = platform.machine() or "unknown"
    return f"{machine}-{hashlib.sha256(flags.encode()).hexdigest()[:8]}" if flags else machine


def native_dir() -> Path:
    """The folder compiled kernels are built into and loaded from in this environment."""
    base = os.environ.get(NATIVE_DIR_ENV)
    if base:
        root = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "passk-interference" / "native"
    return root / cpu_tag()


def _disabled() -> bool:
    return os.environ.get(DISABLE_NATIVE_ENV, "").strip() not in ("", "0")


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compile(cxx: str, include: str, out: Path) -> str | None:
    """Build the library at `out` (atomically); the compiler's complaint on failure, else None.
    `-march=native` first (the folder is per CPU kind); without it if the compiler refuses."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.stem + ".", suffix=".tmp")
    os.close(fd)
    complaint = ""
    try:
        for arch in (["-march=native"], []):
            cmd = [cxx, *_BASE_FLAGS, *arch, "-I", include, str(_SOURCE), "-o", tmp]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            except (OSError, subprocess.TimeoutExpired) as err:
                return f"{cxx} could not run: {err}"
            if proc.returncode == 0:
                os.replace(tmp, out)
                return None
            lines = proc.stderr.strip().splitlines()
            errors = [line for line in lines if "error" in line]
            complaint = (errors or lines or [f"exit status {proc.returncode}"])[0]
        return f"{cxx} failed to build {_SOURCE.name}: {complaint}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _library_path(cxx: str) -> Path:
    import jaxlib

    key = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), jaxlib.__version__.encode(), cxx.encode(), " ".join(_BASE_FLAGS).encode()):
        key.update(part)
        key.update(b"\0")
    return native_dir() / f"answer_sums-{key.hexdigest()[:16]}.so"


def _load() -> NativeStatus:
    if _disabled():
        return NativeStatus(False, f"turned off by {DISABLE_NATIVE_ENV}", None)
    if os.name == "nt":
        return NativeStatus(False, "compiled kernels are built on Linux and macOS only", None)
    ffi = getattr(jax, "ffi", None)
    if ffi is None or not hasattr(ffi, "include_dir"):
        return NativeStatus(False, f"jax {jax.__version__} has no jax.ffi", None)
    if "vmap_method" not in inspect.signature(ffi.ffi_call).parameters:
        return NativeStatus(False, f"jax {jax.__version__}: jax.ffi.ffi_call has no vmap_method", None)
    cxx = _compiler()
    if cxx is None:
        return NativeStatus(False, "no C++ compiler found ($CXX, c++, g++, clang++)", None)
    path = _library_path(cxx)
    how = "loaded"
    if not path.exists():
        try:
            complaint = _compile(cxx, ffi.include_dir(), path)
        except OSError as err:
            complaint = f"cannot write {path.parent}: {err}"
        if complaint is not None:
            return NativeStatus(False, complaint, None)
        how = "built"
    try:
        library = ctypes.CDLL(str(path))
        ffi.register_ffi_target(_TARGET, ffi.pycapsule(getattr(library, _SYMBOL)), platform="cpu")
    except (OSError, AttributeError, ValueError) as err:
        return NativeStatus(False, f"cannot load {path}: {err}", None)
    _LOADED.append(library)  # keep the library mapped for the life of the process
    return NativeStatus(True, how, str(path))


_LOCK = threading.Lock()
_STATUS: list[NativeStatus] = []
_LOADED: list[ctypes.CDLL] = []


def native_status() -> NativeStatus:
    """Build or load the kernel once per process (on the first call) and say whether it is in use."""
    with _LOCK:
        if not _STATUS:
            _STATUS.append(_load())
        return _STATUS[0]


def usable(dtype) -> bool:
    """True when :func:`answer_sums_native` can take scores of `dtype` here (CPU backend, kernel
    loaded, float32 or float64). Decided at trace time."""
    return np.dtype(dtype) in _DTYPES and jax.default_backend() == "cpu" and native_status().available


def _call(r, s):
    status = native_status()
    if not status.available:
        raise RuntimeError(f"the compiled kernel is not available here: {status.reason}")
    if np.dtype(s.dtype) not in _DTYPES:
        raise TypeError(f"scores must be float32 or float64 for the compiled kernel; got {s.dtype}")
    if s.ndim < 2 or r.shape != s.shape[:-1]:
        raise ValueError(f"rewards must have shape (..., n) = {s.shape[:-1]} for scores of shape {s.shape}; "
                         f"got {r.shape}")
    r = r.astype(s.dtype)
    lead = s.shape[:-2]
    call = jax.ffi.ffi_call(
        _TARGET,
        (jax.ShapeDtypeStruct(lead + s.shape[-1:], s.dtype), jax.ShapeDtypeStruct(lead, s.dtype)),
        vmap_method="broadcast_all",
    )
    return call(r, s)


@jax.custom_jvp
def answer_sums_native(r, s):
    """`(G, Q)` of rewards `r` `(..., n)` and scores `s` `(..., n, D)` of one float dtype, by the
    compiled kernel (see the module docstring). Callers check :func:`usable` first.

    Raises:
      RuntimeError: the kernel could not be built or loaded here (:func:`native_status` says why).
      TypeError: scores neither float32 nor float64 (rewards are cast to the scores' dtype).
      ValueError: shapes that do not match.
    """
    return _call(r, s)


@answer_sums_native.defjvp
def _answer_sums_jvp(primals, tangents):
    r, s = primals
    dr, ds = tangents
    out = answer_sums_native(r, s)
    dg = jnp.einsum("...n,...nd->...d", dr, s) + jnp.einsum("...n,...nd->...d", r, ds)
    dq = jnp.einsum("...n,...n->...", dr, jnp.sum(s * s, axis=-1)) + 2 * jnp.einsum("...n,...nd,...nd->...", r, s, ds)
    return out, (dg, dq)
