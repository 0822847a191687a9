"""HyperLSTM layer loops in C++ (hyperlstm_ext.cpp): the loader and the autograd Function.

`_load_cpp_ext` compiles hyperlstm_ext.cpp with torch.utils.cpp_extension.load_inline at
first use (-O3 -march=native -ffast-math -fopenmp) and loads it; later processes load the
cached build. The build folder is `$MEMEXP_EXT_DIR/<key>` (default ~/.cache/memexp/ext/<key>),
managed by load_inline; the key hashes the source, the flags, this CPU (-march=native builds
for the CPU it meets, so a folder shared between machines never hands one CPU another's code)
and the torch version. Without a compiler (or headers) it warns once and returns None, and the
caller runs the TorchScript loops of `hyperlstm_fused` instead.

`_CppScan` is `hyperlstm_scan._scan` with both loops in C++; the weight gradients of all steps
are computed here from what the loops save.

The per-step products (batch rows times a weight) take one of three GEMM paths, `GEMM_PATHS`:
- "avx512": W packed once per call into contiguous column panels, 64-byte vectors, up to 12 rows
  per register block, software prefetch (built only where the compiler targets AVX-512);
- "avx2": the register-blocked small-batch GEMM reading W in place, 32-byte vectors;
- "blas": at::mm / at::addmm, torch's BLAS (MKL or oneDNN on x86).
`gemm_path("auto")` picks by `torch.backends.cpu.get_cpu_capability()`: "avx512" where torch runs
its AVX-512 kernels and the build has that path, else "avx2" (as before on AVX2 CPUs). Measured with
experiments/bench_hyperlstm.py (one thread, batch 12, hidden 352): on a Xeon with AVX-512 the
packed path beats MKL's at::mm on the large products (~105 vs ~190 us per 12 x 352 x 1920
product) and "avx2" by 2-5x; on an AVX2 AMD CPU "avx2" was the fastest. Any path can be forced
(step_impl="cpp_avx512" / "cpp_avx2" / "cpp_blas" on the model), so tests can run each one.
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from memexp.files import text_digest
from memexp.kernels.hyperlstm_fused import GATES, ScanResult

SOURCE = Path(__file__).with_name("hyperlstm_ext.cpp")
# -fopenmp: at::parallel_for is inline OpenMP; -march=native: the build is for this CPU, so the key names it
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]

_cpp_ext: ModuleType | bool | None = None  # the compiled module, False when it could not be built


def _cpu_signature() -> str:
    """Processor, machine and (on Linux) the CPU's instruction-set flags: what -march=native compiles for."""
    cpu = platform.processor() + platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu += next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return cpu


def _build_key(source: str) -> str:
    """12 hex digits naming the build: source, flags, CPU and torch version (sha1, computed as before the move)."""
    return text_digest(source + " ".join(FLAGS) + _cpu_signature() + torch.__version__, "sha1", 12)


def _load_cpp_ext() -> ModuleType | None:
    """Build (once; cached under ~/.cache/memexp/ext) and load the C++ loops, or None with a warning."""
    global _cpp_ext
    if _cpp_ext is None:
        try:
            from torch.utils.cpp_extension import load_inline

            source = SOURCE.read_text(encoding="utf-8")
            key = _build_key(source)
            build_dir = Path(os.environ.get("MEMEXP_EXT_DIR", Path.home() / ".cache" / "memexp" / "ext")) / key
            build_dir.mkdir(parents=True, exist_ok=True)
            _cpp_ext = load_inline(
                name=f"memexp_hyperlstm_{key}",
                cpp_sources=[source],
                functions=["hyperlstm_forward", "hyperlstm_backward", "hyperlstm_has_avx512"],
                extra_cflags=FLAGS,
                extra_ldflags=["-fopenmp"],  # torch's own libgomp.so.1 (same soname) serves it
                build_directory=str(build_dir),
                verbose=False,
            )
        except Exception as e:  # no compiler, no headers, ...: the TorchScript loops compute the same
            warnings.warn(
                f"HyperLSTM: the C++ loops could not be built ({type(e).__name__}: {e}); using step_impl='fused_script' instead",
                RuntimeWarning,
                stacklevel=3,
            )
            _cpp_ext = False
    return _cpp_ext or None


GEMM_PATHS = ("avx512", "avx2", "blas")
_PATH_CODE = {"avx2": 0, "avx512": 1, "blas": 2}  # PATH_* in hyperlstm_ext.cpp


def gemm_unavailable_reason(path: str) -> str | None:
    """Why this CPU (or build) cannot run GEMM `path`, or None when it can. Builds the C++ loops if needed."""
    if path not in GEMM_PATHS:
        return f"unknown GEMM path {path!r} (one of {', '.join(GEMM_PATHS)})"
    ext = _load_cpp_ext()
    if ext is None:
        return "the C++ loops could not be built (no compiler?)"
    if path == "avx512" and not ext.hyperlstm_has_avx512():
        return f"the C++ build does not target AVX-512 (this CPU lacks avx512f; torch capability {torch.backends.cpu.get_cpu_capability()})"
    return None


def available_gemm_paths() -> tuple[str, ...]:
    """The GEMM paths this CPU can run (empty without the C++ loops)."""
    return tuple(p for p in GEMM_PATHS if gemm_unavailable_reason(p) is None)


def gemm_path(requested: str = "auto") -> str:
    """The GEMM path to run: `requested`, or for "auto" the one for torch's CPU capability (see the module doc)."""
    if requested == "auto":
        capability = torch.backends.cpu.get_cpu_capability()
        return "avx512" if capability.startswith("AVX512") and gemm_unavailable_reason("avx512") is None else "avx2"
    reason = gemm_unavailable_reason(requested)
    if reason is not None:
        raise RuntimeError(f"HyperLSTM: GEMM path {requested!r} cannot run here: {reason}")
    return requested


class _CppScan(torch.autograd.Function):
    """`_scan` with both loops in C++ (hyperlstm_ext.cpp): per step only the matmuls go through ATen.

    Call `_load_cpp_ext()` first (it returns None where the loops cannot be built). `path` is one of
    `GEMM_PATHS` (resolve "auto" with `gemm_path` first).

    Takes the input terms as one (T, B, 4H + 4N) tensor `xin` ([W_x x | hyper input]); the weight
    gradients of all steps are computed here from what the loops save, as in `_FusedScan`.
    """

    @staticmethod
    def forward(
        ctx: Any,
        path: str,
        xin: Tensor,
        mask: Tensor | None,
        h: Tensor,
        c: Tensor,
        hh: Tensor,
        hc: Tensor,
        w_h: Tensor,
        w_hyper_h: Tensor,
        w_z: Tensor,
        b_z: Tensor,
        w_d: Tensor,
        b_d: Tensor,
        gamma: Tensor | None,
        shift: Tensor,
        ln_c_w: Tensor | None,
        ln_c_b: Tensor | None,
        hyper_gamma: Tensor | None,
        hyper_shift: Tensor,
        hyper_ln_c_w: Tensor | None,
        hyper_ln_c_b: Tensor | None,
    ) -> ScanResult:
        ext = _cpp_ext
        ln, has_mask = gamma is not None, mask is not None
        none = h.new_empty(0)
        opt = lambda t: none if t is None else t.contiguous()  # noqa: E731
        xin = xin.contiguous()
        w_h, w_hyper_h, w_z, w_d = w_h.contiguous(), w_hyper_h.contiguous(), w_z.contiguous(), w_d.contiguous()
        ln_args = [opt(x) for x in (gamma, ln_c_w, hyper_gamma, hyper_ln_c_w)]
        w_zy = torch.cat([w_z, w_hyper_h], 1)  # (N, P*Z + G*N): one matmul per step for both
        b_zy = torch.cat([b_z, b_z.new_zeros(w_hyper_h.shape[1])])
        saved = ext.hyperlstm_forward(
            xin,
            opt(mask),
            has_mask,
            ln,
            h.contiguous(),
            c.contiguous(),
            hh.contiguous(),
            hc.contiguous(),
            w_h,
            w_hyper_h,
            w_zy,
            b_zy,
            w_d,
            b_d.contiguous(),
            ln_args[0],
            shift.contiguous(),
            ln_args[1],
            opt(ln_c_b),
            ln_args[2],
            hyper_shift.contiguous(),
            ln_args[3],
            opt(hyper_ln_c_b),
            _PATH_CODE[path],
        )
        ctx.ln, ctx.has_mask, ctx.saved, ctx.path = ln, has_mask, saved, _PATH_CODE[path]
        ctx.save_for_backward(xin, opt(mask), w_h, w_hyper_h, w_zy, w_d, *ln_args)
        h_all, c_all, hh_all, hc_all = saved[:4]
        return h_all[1:], h_all[-1].clone(), c_all[-1].clone(), hh_all[-1].clone(), hc_all[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, d_hs: Tensor | None, dh: Tensor | None, dc: Tensor | None, dhh: Tensor | None, dhc: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        xin, mask, w_h, w_hyper_h, w_zy, w_d, gamma, ln_c_w, hyper_gamma, hyper_ln_c_w = ctx.saved_tensors
        saved = ctx.saved
        h_all, hh_all, zy = saved[0], saved[2], saved[5]
        G, (T, B, _), H, N = GATES, xin.shape, h_all.shape[2], hh_all.shape[2]
        P, Z = w_d.shape[0], w_d.shape[1]
        zero = lambda x, like: torch.zeros_like(like) if x is None else x.contiguous()  # noqa: E731
        d_hs = torch.zeros(T, B, H, dtype=xin.dtype, device=xin.device) if d_hs is None else d_hs.contiguous()
        grads = _cpp_ext.hyperlstm_backward(
            d_hs,
            zero(dh, h_all[0]),
            zero(dc, saved[1][0]),
            zero(dhh, hh_all[0]),
            zero(dhc, saved[3][0]),
            xin,
            mask,
            ctx.has_mask,
            ctx.ln,
            saved,
            w_h,
            w_hyper_h,
            w_zy,
            w_d,
            gamma,
            ln_c_w,
            hyper_gamma,
            hyper_ln_c_w,
            ctx.path,
        )
        dh, dc, dhh, dhc, dxin, dhp, dzz, dd, sums = grads
        # weight gradients of all steps at once (rows = T*B); the loops summed the bias and LN gradients
        TB = T * B
        dhp = dhp.view(TB, -1)
        g_w_h = h_all[:-1].reshape(TB, H).t() @ dhp
        g_w_hyper_h = hh_all[:-1].reshape(TB, N).t() @ dhp[:, G * H :]
        g_w_z = hh_all[1:].reshape(TB, N).t() @ dzz.view(TB, P * Z)
        zz = zy.view(TB, -1)[:, : P * Z].reshape(TB, P, Z)
        g_w_d = torch.bmm(zz.permute(1, 2, 0), dd.view(TB, P, H).transpose(0, 1))  # (P, Z, H)
        sums = sums.sum(0).split([G * H, G * H, P * H, H, H, G * N, G * N, N, N, P * Z])
        g_shift, g_gamma, g_b_d, g_ln_c_w, g_ln_c_b, g_hyper_shift, g_hyper_gamma, g_hyper_ln_c_w, g_hyper_ln_c_b, g_b_z = sums
        g_shift, g_b_d, g_hyper_shift = g_shift.view(G, 1, H), g_b_d.view(P, 1, H), g_hyper_shift.view(G, N)
        if ctx.ln:
            g_gamma, g_hyper_gamma = g_gamma.view(G, 1, H), g_hyper_gamma.view(G, N)
        else:
            g_gamma = g_ln_c_w = g_ln_c_b = g_hyper_gamma = g_hyper_ln_c_w = g_hyper_ln_c_b = None
        del ctx.saved
        return (
            None,
            dxin,
            None,
            dh,
            dc,
            dhh,
            dhc,
            g_w_h,
            g_w_hyper_h,
            g_w_z,
            g_b_z,
            g_w_d,
            g_b_d,
            g_gamma,
            g_shift,
            g_ln_c_w,
            g_ln_c_b,
            g_hyper_gamma,
            g_hyper_shift,
            g_hyper_ln_c_w,
            g_hyper_ln_c_b,
        )
