"""Hand-written compute kernels and their loaders: the layer below `memexp.models`.

This folder owns the code that makes a model's inner loop fast rather than the model itself:
step loops with hand-written backward passes, C++ sources and the code that builds and loads
them. A model file (a plain nn.Module) precomputes its inputs and calls a kernel; the kernel
knows nothing of the module. Imports here: torch, the standard library, `memexp.errors` and
`memexp.files`; never `memexp.models` or anything above it. All file I/O a kernel needs
(reading its source, the CPU's description, its build cache) happens here, not in the models.

HyperLSTM (`memexp.models.hyperlstm`) has three scans of one layer, same arguments, same numbers:
- `hyperlstm_scan._scan`: the reference, a plain autograd loop (step_impl="python").
- `hyperlstm_scan._fused_scan` / `_fused_scripted_scan` (`_FusedScan`, step loops in `hyperlstm_fused`): hand-written BPTT,
  loops in Python ("fused") or TorchScript ("fused_script"); any device and dtype.
- `hyperlstm_cpp._CppScan`: both loops in C++ (hyperlstm_ext.cpp), "cpp" and the default "auto".

How they dispatch on the CPU they meet: `hyperlstm_cpp._load_cpp_ext` compiles the C++ loops
on first use with -march=native, so the build uses this CPU's vector instructions; the cache
folder ($MEMEXP_EXT_DIR or ~/.cache/memexp/ext) is keyed by the source, the flags, the CPU
(/proc/cpuinfo flags) and the torch version, so another CPU gets its own build, never a
foreign one. The C++ path is taken for CPU tensors of float32/float64 when the build
succeeds; otherwise (no compiler: one warning; a GPU; other dtypes) the model runs the
TorchScript loops, and plain Python where TorchScript is unavailable. Inside the C++ loops,
at::parallel_for (OpenMP) splits batch rows and GEMM column panels over torch's threads.
The per-step products of the C++ loops take a GEMM path chosen by torch's CPU capability
(`hyperlstm_cpp.gemm_path`): "avx512" (packed panels, 64-byte vectors) where torch runs AVX-512
and the build targets it, else "avx2" (the 32-byte register-blocked GEMM); "blas" (at::mm) and
each other path can be forced with step_impl="cpp_<path>" (tests run every path the CPU can).
"""
