// HyperLSTM layer loops for CPU: per step, the recurrent matmuls run through a register-blocked
// small-batch GEMM (small_gemm, below) and one hand-written loop over (B, units) does all the
// element-wise work (layer norms, gate nonlinearities, cell update), forward and backward.
// Built at first use by memexp/kernels/hyperlstm_cpp.py (torch.utils.cpp_extension.load_inline).
// read whole: one translation unit on purpose: the forward and backward loops share the inlined GEMM
// and gate helpers, and load_inline compiles a single source string (no headers to keep in step).
//
// Layouts (row-major; G = 4 gates i|j|f|o, P = 12 = (x, h, b) x G, Z embedding, H main, N hyper units):
//   xin (T, B, 4H + 4N)   input terms: [W_x x | x-half of the hyper input (+ bias)]
//   hp  (T, B, 4H + 4N)   h_{t-1} @ [W_h | h-half of the hyper input]
//   zy  (T, B, P*Z + 4N)  hh_{t+1} @ [W_z | W_hyper_h] (+ [b_z | 0]): the hyper embeddings z (x, h, b
//                         parts) of step t and the hyper recurrent term of step t + 1, one matmul
//   dxh (T, B, 2G, H)     the scalings d_x, d_h
//   w_d (P, Z, H), b_d (P, H); the backward takes the same weights and multiplies by their transposes
// The Python side (memexp/kernels/hyperlstm_cpp.py, _CppScan) computes all weight gradients from
// what these loops save, as a few large matmuls over T*B rows.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

using at::Tensor;

namespace {

constexpr int64_t G = 4;
// rows of a batch per thread, at least, in the element-wise loops (smaller batches run on one thread)
constexpr int64_t ROW_GRAIN = 4;
constexpr double EPS = 1e-3;  // LayerNorm epsilon of the reference (inside the square root)

// Inner loops over units carry `#pragma GCC ivdep`: their arrays never overlap, and without it
// the compiler must assume they might and leaves the loops scalar (4-5x slower).

// exp-based forms, clamped so no inf appears (built with -ffast-math: exp vectorises, inf is not allowed)
template <typename T>
inline T sigm(T x) {
  x = std::min(std::max(x, T(-40)), T(40));
  return T(1) / (T(1) + std::exp(-x));
}
template <typename T>
inline T tanh_(T x) {
  x = std::min(std::max(x, T(-20)), T(20));
  return T(1) - T(2) / (std::exp(T(2) * x) + T(1));
}

// normalise v[0..n) in place; returns rstd
template <typename T>
inline T layer_norm_(T* v, int64_t n) {
  T mean = 0;
  #pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) mean += v[i];
  mean /= T(n);
  T var = 0;
  #pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) {
    T d = v[i] - mean;
    var += d * d;
  }
  var /= T(n);
  T rstd = T(1) / std::sqrt(var + T(EPS));
  #pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) v[i] = (v[i] - mean) * rstd;
  return rstd;
}

// dx = rstd * (dy - mean(dy) - y * mean(dy * y)) for normalised y; writes out (may alias dy)
template <typename T>
inline void layer_norm_back(const T* dy, const T* y, T rstd, int64_t n, T* out) {
  T m1 = 0, m2 = 0;
  #pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) {
    m1 += dy[i];
    m2 += dy[i] * y[i];
  }
  m1 /= T(n);
  m2 /= T(n);
  #pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) out[i] = rstd * (dy[i] - m1 - y[i] * m2);
}

// --- the LN-LSTM cell, shared by the hyper and the main cell (n units each) ---

// The G gate activations from their pre-activations pre (G, n): with LN, each gate's pre is
// normalised in place (its rstd into rstd[k]) and act = f(pre * gamma + shift); without,
// act = f(pre + shift). f = tanh for the candidate (gate 1), sigmoid for the others.
template <typename T>
inline void gates_forward(T* pre, T* act, int64_t n, bool ln, const T* gamma, const T* shift, T* rstd) {
  for (int64_t k = 0; k < G; ++k) {
    T* v = pre + k * n;
    T* a = act + k * n;
    if (ln) {
      rstd[k] = layer_norm_(v, n);
      #pragma GCC ivdep
      for (int64_t i = 0; i < n; ++i) a[i] = v[i] * gamma[k * n + i] + shift[k * n + i];
    } else {
      #pragma GCC ivdep
      for (int64_t i = 0; i < n; ++i) a[i] = v[i] + shift[k * n + i];
    }
    if (k == 1) {
      #pragma GCC ivdep
      for (int64_t i = 0; i < n; ++i) a[i] = tanh_(a[i]);
    } else {
      #pragma GCC ivdep
      for (int64_t i = 0; i < n; ++i) a[i] = sigm(a[i]);
    }
  }
}

// c' = f c + i j (mask) and h' = o tanh(LN(c')): writes c', its normalised copy cn, tc = tanh(.)
// and h'; mask (dropout on the candidate) may be null.
template <typename T>
inline void cell_forward(const T* act, const T* c_prev, const T* mask, T* c_new, T* cn, T* tc, T* h_new, int64_t n,
                         bool ln, const T* ln_w, const T* ln_b, T* rstd) {
  if (mask) {
    #pragma GCC ivdep
    for (int64_t i = 0; i < n; ++i) c_new[i] = act[2 * n + i] * c_prev[i] + act[i] * act[n + i] * mask[i];
  } else {
    #pragma GCC ivdep
    for (int64_t i = 0; i < n; ++i) c_new[i] = act[2 * n + i] * c_prev[i] + act[i] * act[n + i];
  }
  #pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) cn[i] = c_new[i];
  if (ln) {
    *rstd = layer_norm_(cn, n);
    #pragma GCC ivdep
    for (int64_t i = 0; i < n; ++i) tc[i] = tanh_(cn[i] * ln_w[i] + ln_b[i]);
  } else {
    #pragma GCC ivdep
    for (int64_t i = 0; i < n; ++i) tc[i] = tanh_(cn[i]);
  }
  #pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) h_new[i] = act[3 * n + i] * tc[i];
}

// Backward of cell_forward for the gradient dh' = dh_a (+ dh_b, may be null) reaching h': writes
// dtc (gradient of LN(c')'s affine output, for the LN weights) and the gate gradients dg (G, n),
// and turns dc (gradient reaching c') into the gradient of c. tmp: n scratch values.
template <typename T>
inline void cell_backward(const T* dh_a, const T* dh_b, T* dc, const T* act, const T* c_prev, const T* mask,
                          const T* cn, const T* tc, int64_t n, bool ln, const T* ln_w, T rstd, T* dtc, T* dg, T* tmp) {
  #pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) {
    const T dv = dh_b ? dh_a[i] + dh_b[i] : dh_a[i], so = act[3 * n + i], tv = tc[i];
    dtc[i] = dv * so * (T(1) - tv * tv);
    dg[3 * n + i] = dv * tv * so * (T(1) - so);
  }
  T* dcn = tmp;
  if (ln) {
    #pragma GCC ivdep
    for (int64_t i = 0; i < n; ++i) dcn[i] = dtc[i] * ln_w[i];
    layer_norm_back(dcn, cn, rstd, n, dcn);
  } else {
    #pragma GCC ivdep
    for (int64_t i = 0; i < n; ++i) dcn[i] = dtc[i];
  }
  #pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) {
    const T dct = dc[i] + dcn[i];
    const T si = act[i], tj = act[n + i], sf = act[2 * n + i];
    const T m = mask ? mask[i] : T(1);
    dg[i] = dct * tj * m * si * (T(1) - si);
    dg[n + i] = dct * si * m * (T(1) - tj * tj);
    dg[2 * n + i] = dct * c_prev[i] * sf * (T(1) - sf);
    dc[i] = dct * sf;
  }
}

// Backward of gates_forward's normalisation: da (G, n) = gradient of the pre-activations,
// from the gate gradients dg and the normalised pre-activations pre.
template <typename T>
inline void gates_backward(const T* dg, const T* pre, const T* rstd, int64_t n, bool ln, const T* gamma, T* da) {
  for (int64_t k = 0; k < G; ++k) {
    T* dak = da + k * n;
    if (ln) {
      #pragma GCC ivdep
      for (int64_t i = 0; i < n; ++i) dak[i] = dg[k * n + i] * gamma[k * n + i];
      layer_norm_back(dak, pre + k * n, rstd[k], n, dak);
    } else {
      #pragma GCC ivdep
      for (int64_t i = 0; i < n; ++i) dak[i] = dg[k * n + i];
    }
  }
}

// C[m, n] = bias[n] (or 0) + sum_k A[m * lda + k] * W[k * ldw + n], for m < M, n < N.
// Every matmul inside the time loops is such a product with few rows (M = batch): h @ [W_h | ...]
// (K = H, N = 4H + 4N), hh @ [W_z | W_hyper_h], the z -> d projections (K = Z, N = H), and their
// transposes in the backward loop. For so few rows a BLAS call spends much of its time packing
// W; here W is read in place, column panel by column panel (a panel of K x 16 floats stays in L1
// while all row blocks use it), and a block of RB rows x NV vectors keeps its sums in registers
// (GCC vector extensions; 32 bytes = one AVX register). 1.2-1.6x faster than at::mm at batch 12
// on one thread (experiments/bench_hyperlstm.py times the whole model).
template <typename T>
struct Vec32 {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int lanes = 32 / sizeof(T);
};

template <typename T, int RB, int NV>
inline void gemm_block(const T* A, int64_t lda, const T* W, int64_t ldw, const T* bias, int64_t K, T* C,
                       int64_t ldc) {
  typedef typename Vec32<T>::type V;
  constexpr int L = Vec32<T>::lanes;
  V acc[RB][NV];
  for (int v = 0; v < NV; ++v) {
    V b0 = V{};
    if (bias) __builtin_memcpy(&b0, bias + v * L, sizeof(V));
    for (int r = 0; r < RB; ++r) acc[r][v] = b0;
  }
  for (int64_t k = 0; k < K; ++k) {
    V w[NV];
    for (int v = 0; v < NV; ++v) __builtin_memcpy(&w[v], W + k * ldw + v * L, sizeof(V));
    for (int r = 0; r < RB; ++r) {
      const T a = A[r * lda + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * w[v];
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) __builtin_memcpy(C + r * ldc + v * L, &acc[r][v], sizeof(V));
}

// all rows of one column panel of NV vectors
template <typename T, int NV>
inline void gemm_panel(const T* A, int64_t lda, const T* W, int64_t ldw, const T* bias, int64_t M, int64_t K,
                       T* C, int64_t ldc) {
  int64_t m = 0;
  for (; m + 6 <= M; m += 6) gemm_block<T, 6, NV>(A + m * lda, lda, W, ldw, bias, K, C + m * ldc, ldc);
  if (m + 4 <= M) {
    gemm_block<T, 4, NV>(A + m * lda, lda, W, ldw, bias, K, C + m * ldc, ldc);
    m += 4;
  }
  if (m + 2 <= M) {
    gemm_block<T, 2, NV>(A + m * lda, lda, W, ldw, bias, K, C + m * ldc, ldc);
    m += 2;
  }
  if (m < M) gemm_block<T, 1, NV>(A + m * lda, lda, W, ldw, bias, K, C + m * ldc, ldc);
}

template <typename T>
void small_gemm(const T* A, int64_t lda, const T* W, int64_t ldw, const T* bias, int64_t M, int64_t K, int64_t N,
                T* C, int64_t ldc) {
  constexpr int L = Vec32<T>::lanes, VB = 2 * L;
  const int64_t panels = N / VB;
  // threads (when torch has more than one) split the column panels of the larger products
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, M * K * VB));
  at::parallel_for(0, panels, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p * VB;
      gemm_panel<T, 2>(A, lda, W + n, ldw, bias ? bias + n : nullptr, M, K, C + n, ldc);
    }
  });
  int64_t n = panels * VB;
  if (n + L <= N) {
    gemm_panel<T, 1>(A, lda, W + n, ldw, bias ? bias + n : nullptr, M, K, C + n, ldc);
    n += L;
  }
  for (; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) {
      T acc = bias ? bias[n] : T(0);
      for (int64_t k = 0; k < K; ++k) acc += A[m * lda + k] * W[k * ldw + n];
      C[m * ldc + n] = acc;
    }
}

// --- the GEMM paths of the per-step products (chosen by the caller, hyperlstm_cpp.gemm_path) ---
// PATH_AVX2: small_gemm above (32-byte vectors, W read in place); PATH_AVX512: packed panels, 64-byte
// vectors (below; compiled only where the build targets AVX-512); PATH_BLAS: at::mm / at::addmm
// (MKL, oneDNN or whatever BLAS torch was built with).
constexpr int64_t PATH_AVX2 = 0, PATH_AVX512 = 1, PATH_BLAS = 2;

#if defined(__AVX512F__)
constexpr bool HAS_AVX512 = true;

// The AVX-512 product. Why by hand: at batch 12 the large products (h @ [W_h | ...], 352 x 1920,
// and its transpose in the backward) are bound by streaming W (2.7 MB, more than L2) from L3
// every step. BLAS re-reads W in its row-major layout on every call; here W is packed once per
// sequence into column panels of 2 x 64 bytes stored contiguously (one K x 32 float panel after
// another), so each step reads W as one sequential stream, with software prefetch ahead of the
// loads, and a block of up to 12 rows x 2 vectors keeps its 24 sums in zmm registers (of 32), so
// W is read once per step for the whole batch. Measured on a Xeon with AVX-512 (one thread,
// 12 x 352 x 1920): about 105 us against 190 us for at::mm and 510 us for small_gemm.
template <typename T>
struct Vec64 {
  typedef T type __attribute__((vector_size(64)));
  static constexpr int lanes = 64 / sizeof(T);
};

// C[0..RB) x [0..ncols) = bias + A @ panel; the panel is K rows of NV vectors, contiguous.
template <typename T, int RB, int NV>
inline void packed_block(const T* A, int64_t lda, const T* Wp, const T* bias, int64_t K, T* C, int64_t ldc,
                         int64_t ncols) {
  typedef typename Vec64<T>::type V;
  constexpr int L = Vec64<T>::lanes;
  constexpr int64_t AHEAD = 1024;  // bytes of the panel prefetched ahead of the loads
  V acc[RB][NV];
  for (int v = 0; v < NV; ++v) {
    V b0 = V{};
    if (bias) __builtin_memcpy(&b0, bias + v * L, sizeof(V));
    for (int r = 0; r < RB; ++r) acc[r][v] = b0;
  }
  const char* pf = reinterpret_cast<const char*>(Wp) + AHEAD;
  for (int64_t k = 0; k < K; ++k) {
    for (int v = 0; v < NV; ++v) __builtin_prefetch(pf + (k * NV + v) * sizeof(V));
    V w[NV];
    for (int v = 0; v < NV; ++v) __builtin_memcpy(&w[v], Wp + (k * NV + v) * L, sizeof(V));
    for (int r = 0; r < RB; ++r) {
      const T a = A[r * lda + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * w[v];
    }
  }
  if (ncols == NV * L) {
    for (int r = 0; r < RB; ++r)
      for (int v = 0; v < NV; ++v) __builtin_memcpy(C + r * ldc + v * L, &acc[r][v], sizeof(V));
  } else {  // the last, zero-padded panel: only its real columns
    for (int r = 0; r < RB; ++r) {
      T row[NV * L];
      __builtin_memcpy(row, &acc[r][0], sizeof(row));
      std::copy(row, row + ncols, C + r * ldc);
    }
  }
}

// all M rows of one panel: blocks of 12 rows, then one block of the rest
template <typename T, int NV>
void packed_panel(const T* A, int64_t lda, const T* Wp, const T* bias, int64_t M, int64_t K, T* C, int64_t ldc,
                  int64_t ncols) {
  int64_t m = 0;
  for (; m + 12 <= M; m += 12) packed_block<T, 12, NV>(A + m * lda, lda, Wp, bias, K, C + m * ldc, ldc, ncols);
  const T* a = A + m * lda;
  T* c = C + m * ldc;
  switch (M - m) {
#define MEMEXP_ROWS(R) \
  case R:              \
    packed_block<T, R, NV>(a, lda, Wp, bias, K, c, ldc, ncols); \
    break;
    MEMEXP_ROWS(1) MEMEXP_ROWS(2) MEMEXP_ROWS(3) MEMEXP_ROWS(4) MEMEXP_ROWS(5) MEMEXP_ROWS(6)
    MEMEXP_ROWS(7) MEMEXP_ROWS(8) MEMEXP_ROWS(9) MEMEXP_ROWS(10) MEMEXP_ROWS(11)
#undef MEMEXP_ROWS
    default:
      break;
  }
}
#else
constexpr bool HAS_AVX512 = false;
#endif

// A weight W (K x N) with an optional bias (N), multiplied every step by rows of activations through
// the chosen path. W is row-major with row stride ldw, or (transposed) the transpose of a row-major
// (N x K) matrix with row stride ldw. For PATH_AVX512 it holds W packed into panels (see above).
template <typename T>
class StepMat {
 public:
  StepMat(int64_t path, const T* W, int64_t ldw, const T* bias, int64_t K, int64_t N, const at::TensorOptions& opt,
          bool transposed = false)
      : path_(path), W_(W), ldw_(ldw), bias_(bias), K_(K), N_(N), opt_(opt) {
    if (path == PATH_BLAS) {  // BLAS reads the transpose in place
      w_t_ = at::from_blob(const_cast<T*>(W), {K, N}, transposed ? at::IntArrayRef{1, ldw} : at::IntArrayRef{ldw, 1}, opt);
      if (bias) bias_t_ = at::from_blob(const_cast<T*>(bias), {N}, opt);
    }
    if (path == PATH_AVX2 && transposed) {  // small_gemm reads W row-major
      own_ = at::from_blob(const_cast<T*>(W), {N, K}, {ldw, 1}, opt).t().contiguous();
      W_ = own_.data_ptr<T>();
      ldw_ = N;
    }
#if defined(__AVX512F__)
    if (path == PATH_AVX512) {
      constexpr int64_t L = Vec64<T>::lanes, VB = 2 * L;
      const int64_t padded = (N + L - 1) / L * L;
      packed_ = at::empty({K * padded + (bias ? padded : 0)}, opt);
      T* out = packed_.data_ptr<T>();
      for (int64_t n0 = 0; n0 < N; n0 += VB) {
        const int64_t width = std::min(VB, padded - n0), cols = std::min(VB, N - n0);
        T* panel = out + n0 * K;  // every earlier panel is VB wide
        if (transposed) {
          for (int64_t j = 0; j < cols; ++j)
            for (int64_t k = 0; k < K; ++k) panel[k * width + j] = W[(n0 + j) * ldw + k];
        } else {
          for (int64_t k = 0; k < K; ++k) std::copy(W + k * ldw + n0, W + k * ldw + n0 + cols, panel + k * width);
        }
        if (cols < width)
          for (int64_t k = 0; k < K; ++k) std::fill(panel + k * width + cols, panel + (k + 1) * width, T(0));
      }
      if (bias) {
        std::copy(bias, bias + N, out + K * padded);
        std::fill(out + K * padded + N, out + K * padded + padded, T(0));
      }
    }
#endif
    if (path == PATH_AVX512 && !HAS_AVX512) TORCH_CHECK(false, "hyperlstm: this build has no AVX-512 path");
  }

  // C (M x N, row stride ldc) = bias + A (M x K, row stride lda) @ W; threads split column panels
  void mul(const T* A, int64_t lda, int64_t M, T* C, int64_t ldc) const {
    if (M <= 0) return;
    if (path_ == PATH_AVX2) {
      small_gemm<T>(A, lda, W_, ldw_, bias_, M, K_, N_, C, ldc);
    } else if (path_ == PATH_BLAS) {
      Tensor a = at::from_blob(const_cast<T*>(A), {M, K_}, {lda, 1}, opt_);
      Tensor c = at::from_blob(C, {M, N_}, {ldc, 1}, opt_);
      if (bias_)
        at::addmm_out(c, bias_t_, a, w_t_);
      else
        at::mm_out(c, a, w_t_);
    } else {
#if defined(__AVX512F__)
      constexpr int64_t L = Vec64<T>::lanes, VB = 2 * L;
      const int64_t padded = (N_ + L - 1) / L * L, panels = (N_ + VB - 1) / VB;
      const T* Wp = packed_.data_ptr<T>();
      const T* bp = bias_ ? Wp + K_ * padded : nullptr;
      const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, M * K_ * VB));
      at::parallel_for(0, panels, grain, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t n0 = p * VB, cols = std::min(VB, N_ - n0);
          const T* b = bp ? bp + n0 : nullptr;
          if (padded - n0 > L)
            packed_panel<T, 2>(A, lda, Wp + n0 * K_, b, M, K_, C + n0, ldc, cols);
          else
            packed_panel<T, 1>(A, lda, Wp + n0 * K_, b, M, K_, C + n0, ldc, cols);
        }
      });
#endif
    }
  }

 private:
  int64_t path_;
  const T* W_;  // row-major (ldw_) for PATH_AVX2
  int64_t ldw_;
  const T* bias_;
  int64_t K_, N_;
  at::TensorOptions opt_;
  Tensor w_t_, bias_t_, packed_, own_;
};

template <typename T>
void forward_impl(const Tensor& xin, const Tensor& mask, bool has_mask, bool ln, const Tensor& w_h,
                  const Tensor& w_hyper_h, const Tensor& w_zy, const Tensor& b_zy, const Tensor& w_d,
                  const Tensor& b_d, const Tensor& gamma, const Tensor& shift, const Tensor& ln_c_w,
                  const Tensor& ln_c_b, const Tensor& hyper_gamma, const Tensor& hyper_shift,
                  const Tensor& hyper_ln_c_w, const Tensor& hyper_ln_c_b, int64_t path, std::vector<Tensor>& o) {
  // o: h_all c_all hh_all hc_all hp zy dxh n act rstd cn rstd_c tc ny acty rstd_y hcn rstd_hc tcy
  Tensor &h_all = o[0], &c_all = o[1], &hh_all = o[2], &hc_all = o[3], &hp = o[4], &zy = o[5];
  const int64_t T_ = xin.size(0), B = xin.size(1), H = h_all.size(2), N = hh_all.size(2);
  const int64_t Z = w_d.size(1), P = w_d.size(0), W = G * H + G * N, PZ = P * Z, ZY = PZ + G * N;
  Tensor yy = at::mm(hh_all[0], w_hyper_h);  // the hyper recurrent term of step 0; later ones come with zy
  const T* wd = w_d.data_ptr<T>();
  const T* bd = b_d.data_ptr<T>();
  const T* gm = ln ? gamma.data_ptr<T>() : nullptr;
  const T* sh = shift.data_ptr<T>();
  const T* lcw = ln ? ln_c_w.data_ptr<T>() : nullptr;
  const T* lcb = ln ? ln_c_b.data_ptr<T>() : nullptr;
  const T* hgm = ln ? hyper_gamma.data_ptr<T>() : nullptr;
  const T* hsh = hyper_shift.data_ptr<T>();
  const T* hlcw = ln ? hyper_ln_c_w.data_ptr<T>() : nullptr;
  const T* hlcb = ln ? hyper_ln_c_b.data_ptr<T>() : nullptr;
  const auto opt = xin.options();
  const StepMat<T> m_h(path, w_h.data_ptr<T>(), W, nullptr, H, W, opt);
  const StepMat<T> m_zy(path, w_zy.data_ptr<T>(), ZY, b_zy.data_ptr<T>(), N, ZY, opt);
  std::vector<StepMat<T>> m_d;
  for (int64_t p = 0; p < P; ++p) m_d.emplace_back(path, wd + p * Z * H, H, bd + p * H, Z, H, opt);
  for (int64_t t = 0; t < T_; ++t) {
    T* hp_t = hp.data_ptr<T>() + t * B * W;
    m_h.mul(h_all.data_ptr<T>() + t * B * H, H, B, hp_t, W);
    const T* yy0 = t == 0 ? yy.data_ptr<T>() : zy.data_ptr<T>() + (t - 1) * B * ZY + PZ;
    const int64_t yy_stride = t == 0 ? G * N : ZY;
    // --- hyper LSTM cell ---
    {
      const T* xr0 = xin.data_ptr<T>() + t * B * W;
      const T* hp0 = hp_t;
      const T* hc_prev0 = hc_all.data_ptr<T>() + t * B * N;
      T* hc_new0 = hc_all.data_ptr<T>() + (t + 1) * B * N;
      T* hh_new0 = hh_all.data_ptr<T>() + (t + 1) * B * N;
      T* ny0 = o[13].data_ptr<T>() + t * B * G * N;
      T* acty0 = o[14].data_ptr<T>() + t * B * G * N;
      T* rstdy0 = o[15].data_ptr<T>() + t * B * G;
      T* hcn0 = o[16].data_ptr<T>() + t * B * N;
      T* rstdhc0 = o[17].data_ptr<T>() + t * B;
      T* tcy0 = o[18].data_ptr<T>() + t * B * N;
      at::parallel_for(0, B, ROW_GRAIN, [&](int64_t b_begin, int64_t b_end) {
        for (int64_t b = b_begin; b < b_end; ++b) {
          const T* xr = xr0 + b * W + G * H;
          const T* hr = hp0 + b * W + G * H;
          const T* yr = yy0 + b * yy_stride;
          T* ny = ny0 + b * G * N;
          T* acty = acty0 + b * G * N;
          #pragma GCC ivdep
          for (int64_t i = 0; i < G * N; ++i) ny[i] = xr[i] + hr[i] + yr[i];
          gates_forward(ny, acty, N, ln, hgm, hsh, rstdy0 + b * G);
          cell_forward(acty, hc_prev0 + b * N, (const T*)nullptr, hc_new0 + b * N, hcn0 + b * N, tcy0 + b * N,
                       hh_new0 + b * N, N, ln, hlcw, hlcb, rstdhc0 + b);
        }
      });
    }
    // --- hyper embeddings z (x, h, b parts), and the next step's hyper recurrent term ---
    T* zy_t = zy.data_ptr<T>() + t * B * ZY;
    m_zy.mul(hh_all.data_ptr<T>() + (t + 1) * B * N, N, B, zy_t, ZY);
    // --- main LSTM cell ---
    {
      const T* xr0 = xin.data_ptr<T>() + t * B * W;
      const T* hp0 = hp_t;
      const T* zz0 = zy_t;
      const T* mk0 = has_mask ? mask.data_ptr<T>() + t * B * H : nullptr;
      const T* c_prev0 = c_all.data_ptr<T>() + t * B * H;
      T* c_new0 = c_all.data_ptr<T>() + (t + 1) * B * H;
      T* h_new0 = h_all.data_ptr<T>() + (t + 1) * B * H;
      T* dxh0 = o[6].data_ptr<T>() + t * B * 2 * G * H;
      T* n0 = o[7].data_ptr<T>() + t * B * G * H;
      T* act0 = o[8].data_ptr<T>() + t * B * G * H;
      T* rstd0 = o[9].data_ptr<T>() + t * B * G;
      T* cn0 = o[10].data_ptr<T>() + t * B * H;
      T* rstdc0 = o[11].data_ptr<T>() + t * B;
      T* tc0 = o[12].data_ptr<T>() + t * B * H;
      // per thread, for its rows: d_x, d_h (into dxh) and the additive term (into n), W_d z + b_d,
      // part by part; then the element-wise cell
      at::parallel_for(0, B, ROW_GRAIN, [&](int64_t b_begin, int64_t b_end) {
        for (int64_t p = 0; p < P; ++p) {  // this thread's rows of W_d z + b_d
          const int64_t ldc = p < 2 * G ? 2 * G * H : G * H;
          T* out = (p < 2 * G ? dxh0 + p * H : n0 + (p - 2 * G) * H) + b_begin * ldc;
          m_d[p].mul(zz0 + b_begin * ZY + p * Z, ZY, b_end - b_begin, out, ldc);
        }
        for (int64_t b = b_begin; b < b_end; ++b) {
          const T* xm = xr0 + b * W;
          const T* hm = hp0 + b * W;
          T* dxh = dxh0 + b * 2 * G * H;
          T* nr = n0 + b * G * H;
          T* act = act0 + b * G * H;
          for (int64_t k = 0; k < G; ++k) {
            const T* dx = dxh + k * H;
            const T* dh = dxh + (G + k) * H;
            T* a = nr + k * H;
            #pragma GCC ivdep
            for (int64_t i = 0; i < H; ++i) a[i] += dx[i] * xm[k * H + i] + dh[i] * hm[k * H + i];
          }
          gates_forward(nr, act, H, ln, gm, sh, rstd0 + b * G);
          cell_forward((const T*)act, c_prev0 + b * H, has_mask ? mk0 + b * H : nullptr, c_new0 + b * H, cn0 + b * H,
                       tc0 + b * H, h_new0 + b * H, H, ln, lcw, lcb, rstdc0 + b);
        }
      });
    }
  }
}

// Columns of the per-row sums the backward accumulates (the gradients of the biases and LN weights,
// summed over steps here and over rows by the caller): their offsets in a row of `sums`.
struct SumCols {
  int64_t shift, gamma, b_d, ln_c_w, ln_c_b, hyper_shift, hyper_gamma, hyper_ln_c_w, hyper_ln_c_b, b_z, total;
  SumCols(int64_t H, int64_t N, int64_t P, int64_t Z) {
    shift = 0;
    gamma = shift + G * H;
    b_d = gamma + G * H;
    ln_c_w = b_d + P * H;
    ln_c_b = ln_c_w + H;
    hyper_shift = ln_c_b + H;
    hyper_gamma = hyper_shift + G * N;
    hyper_ln_c_w = hyper_gamma + G * N;
    hyper_ln_c_b = hyper_ln_c_w + N;
    b_z = hyper_ln_c_b + N;
    total = b_z + P * Z;
  }
};

template <typename T>
inline void add_to(T* acc, const T* x, int64_t n) {
  #pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}
template <typename T>
inline void add_product_to(T* acc, const T* x, const T* y, int64_t n) {
  #pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i] * y[i];
}

// w_h (H, W), w_hyper_h (N, G*N), w_zy (N, ZY) and w_d (P, Z, H) as in the forward: the loops
// multiply by their transposes (StepMat reads them transposed).
template <typename T>
void backward_impl(const Tensor& d_hs, Tensor& dh, Tensor& dc, Tensor& dhh, Tensor& dhc, const Tensor& xin,
                   const Tensor& mask, bool has_mask, bool ln, const std::vector<Tensor>& s, const Tensor& w_h,
                   const Tensor& w_hyper_h, const Tensor& w_zy, const Tensor& w_d, const Tensor& gamma,
                   const Tensor& ln_c_w, const Tensor& hyper_gamma, const Tensor& hyper_ln_c_w, int64_t path,
                   std::vector<Tensor>& g) {
  // s: the forward's outputs (see forward_impl); g: dxin dhp dzz dd sums
  const Tensor &c_all = s[1], &hc_all = s[3], &hp = s[4];
  const int64_t T_ = xin.size(0), B = xin.size(1), H = c_all.size(2), N = hc_all.size(2);
  const int64_t Z = w_d.size(1), P = w_d.size(0), W = G * H + G * N, PZ = P * Z, ZY = PZ + G * N;
  const SumCols col(H, N, P, Z);
  const T* wd = w_d.data_ptr<T>();  // (P, Z, H)
  const T* gm = ln ? gamma.data_ptr<T>() : nullptr;
  const T* lcw = ln ? ln_c_w.data_ptr<T>() : nullptr;
  const T* hgm = ln ? hyper_gamma.data_ptr<T>() : nullptr;
  const T* hlcw = ln ? hyper_ln_c_w.data_ptr<T>() : nullptr;
  const auto opt = xin.options();
  std::vector<StepMat<T>> m_dz;  // dd @ W_d^T, part by part
  for (int64_t p = 0; p < P; ++p) m_dz.emplace_back(path, wd + p * Z * H, H, nullptr, H, Z, opt, true);
  const StepMat<T> m_zy_t(path, w_zy.data_ptr<T>(), ZY, nullptr, ZY, N, opt, true);
  const StepMat<T> m_h_t(path, w_h.data_ptr<T>(), W, nullptr, W, H, opt, true);
  Tensor dh_next = at::empty_like(dh), dhh_tot = at::empty_like(dhh);
  // [dzz_t | day_{t+1}]: both reach hh_{t+1}, through [W_z | W_hyper_h]; one matmul per step
  Tensor dzy = at::zeros({B, ZY}, opt);
  T* dzy0 = dzy.data_ptr<T>();
  // scratch of one step, per row: the gate gradients dg (G, H) and dgy (G, N), dtc (H), dtcy (N)
  Tensor scratch = at::empty({B, G * H + G * N + H + N}, opt);
  T* scratch0 = scratch.data_ptr<T>();
  const int64_t SW = scratch.size(1);
  T* sums0 = g[4].data_ptr<T>();  // (B, col.total), zeroed by the caller
  for (int64_t t = T_ - 1; t >= 0; --t) {
    T* dhp0 = g[1].data_ptr<T>() + t * B * W;
    // --- main cell ---
    {
      const T* dhs0 = d_hs.data_ptr<T>() + t * B * H;
      T* dh0 = dh.data_ptr<T>();
      T* dc0 = dc.data_ptr<T>();
      const T* xr0 = xin.data_ptr<T>() + t * B * W;
      const T* hp0 = hp.data_ptr<T>() + t * B * W;
      const T* mk0 = has_mask ? mask.data_ptr<T>() + t * B * H : nullptr;
      const T* cp0 = c_all.data_ptr<T>() + t * B * H;
      const T* dxh0 = s[6].data_ptr<T>() + t * B * 2 * G * H;
      const T* n0 = s[7].data_ptr<T>() + t * B * G * H;
      const T* act0 = s[8].data_ptr<T>() + t * B * G * H;
      const T* rstd0 = s[9].data_ptr<T>() + t * B * G;
      const T* cn0 = s[10].data_ptr<T>() + t * B * H;
      const T* rstdc0 = s[11].data_ptr<T>() + t * B;
      const T* tc0 = s[12].data_ptr<T>() + t * B * H;
      T* dxin0 = g[0].data_ptr<T>() + t * B * W;
      T* dzz0 = g[2].data_ptr<T>() + t * B * P * Z;
      T* dd0 = g[3].data_ptr<T>() + t * B * P * H;
      at::parallel_for(0, B, ROW_GRAIN, [&](int64_t b_begin, int64_t b_end) {
        std::vector<T> tmp(H);  // per thread
        for (int64_t b = b_begin; b < b_end; ++b) {
          T* dg = scratch0 + b * SW;
          T* dtc = dg + G * H + G * N;
          T* sums = sums0 + b * col.total;
          cell_backward(dh0 + b * H, dhs0 + b * H, dc0 + b * H, act0 + b * G * H, cp0 + b * H,
                        has_mask ? mk0 + b * H : nullptr, cn0 + b * H, tc0 + b * H, H, ln, lcw,
                        ln ? rstdc0[b] : T(0), dtc, dg, tmp.data());
          const T* xm = xr0 + b * W;
          const T* hm = hp0 + b * W;
          const T* dxh = dxh0 + b * 2 * G * H;
          const T* nr = n0 + b * G * H;
          T* dd = dd0 + b * P * H;
          T* dxin = dxin0 + b * W;
          T* dhp = dhp0 + b * W;
          T* da = dd + 2 * G * H;  // the b part of dd is the gradient of the gates' pre-activations itself
          gates_backward((const T*)dg, nr, rstd0 + b * G, H, ln, gm, da);
          for (int64_t k = 0; k < G; ++k) {  // dd's x and h parts, and all three parts into the b_d sums
            T* ddx = dd + k * H;
            T* ddh = dd + (G + k) * H;
            T* sx = sums + col.b_d + k * H;
            T* sh = sums + col.b_d + (G + k) * H;
            T* sb = sums + col.b_d + (2 * G + k) * H;
            #pragma GCC ivdep
            for (int64_t i = 0; i < H; ++i) {
              const T a = da[k * H + i], vx = a * xm[k * H + i], vh = a * hm[k * H + i];
              ddx[i] = vx;
              ddh[i] = vh;
              sx[i] += vx;
              sh[i] += vh;
              sb[i] += a;
              dxin[k * H + i] = a * dxh[k * H + i];
              dhp[k * H + i] = a * dxh[(G + k) * H + i];
            }
          }
          add_to(sums + col.shift, (const T*)dg, G * H);
          if (ln) {
            add_product_to(sums + col.gamma, (const T*)dg, nr, G * H);
            add_product_to(sums + col.ln_c_w, (const T*)dtc, cn0 + b * H, H);
            add_to(sums + col.ln_c_b, (const T*)dtc, H);
          }
        }
        // dz of this thread's rows: dd @ W_d^T, part by part; into dzz (saved) and the z part of dzy
        for (int64_t p = 0; p < P; ++p)
          m_dz[p].mul(dd0 + b_begin * P * H + p * H, P * H, b_end - b_begin, dzz0 + b_begin * P * Z + p * Z, P * Z);
        for (int64_t b = b_begin; b < b_end; ++b) {
          std::copy(dzz0 + b * P * Z, dzz0 + (b + 1) * P * Z, dzy0 + b * ZY);
          add_to(sums0 + b * col.total + col.b_z, (const T*)(dzz0 + b * P * Z), P * Z);
        }
      });
    }
    // gradient of hh_{t+1}: [dzz_t | day_{t+1}] @ [W_z | W_hyper_h]^T (+ the caller's, at the last step)
    m_zy_t.mul(dzy0, ZY, B, dhh_tot.data_ptr<T>(), N);
    if (t == T_ - 1) dhh_tot.add_(dhh);
    // --- hyper cell ---
    {
      T* dhh0 = dhh_tot.data_ptr<T>();
      T* dhc0 = dhc.data_ptr<T>();
      const T* hcp0 = hc_all.data_ptr<T>() + t * B * N;
      const T* ny0 = s[13].data_ptr<T>() + t * B * G * N;
      const T* acty0 = s[14].data_ptr<T>() + t * B * G * N;
      const T* rstdy0 = s[15].data_ptr<T>() + t * B * G;
      const T* hcn0 = s[16].data_ptr<T>() + t * B * N;
      const T* rstdhc0 = s[17].data_ptr<T>() + t * B;
      const T* tcy0 = s[18].data_ptr<T>() + t * B * N;
      T* dxin0 = g[0].data_ptr<T>() + t * B * W;
      at::parallel_for(0, B, ROW_GRAIN, [&](int64_t b_begin, int64_t b_end) {
        std::vector<T> tmp(N);  // per thread
        for (int64_t b = b_begin; b < b_end; ++b) {
          T* dgy = scratch0 + b * SW + G * H;
          T* dtcy = dgy + G * N + H;
          T* sums = sums0 + b * col.total;
          cell_backward(dhh0 + b * N, (const T*)nullptr, dhc0 + b * N, acty0 + b * G * N, hcp0 + b * N,
                        (const T*)nullptr, hcn0 + b * N, tcy0 + b * N, N, ln, hlcw, ln ? rstdhc0[b] : T(0), dtcy,
                        dgy, tmp.data());
          T* day = dhp0 + b * W + G * H;
          T* dxy = dxin0 + b * W + G * H;
          T* dzy_y = dzy0 + b * ZY + PZ;
          gates_backward((const T*)dgy, ny0 + b * G * N, rstdy0 + b * G, N, ln, hgm, day);
          #pragma GCC ivdep
          for (int64_t i = 0; i < G * N; ++i) {
            dxy[i] = day[i];
            dzy_y[i] = day[i];
          }
          add_to(sums + col.hyper_shift, (const T*)dgy, G * N);
          if (ln) {
            add_product_to(sums + col.hyper_gamma, (const T*)dgy, ny0 + b * G * N, G * N);
            add_product_to(sums + col.hyper_ln_c_w, (const T*)dtcy, hcn0 + b * N, N);
            add_to(sums + col.hyper_ln_c_b, (const T*)dtcy, N);
          }
        }
      });
    }
    // gradients of the previous state through the recurrent matmuls
    m_h_t.mul(dhp0, W, B, dh_next.data_ptr<T>(), H);
    std::swap(dh, dh_next);
  }
  at::mm_out(dhh, dzy.narrow(1, PZ, G * N), w_hyper_h.t());  // gradient of hh_0
}

}  // namespace

// Runs one layer over T steps. Returns the states of steps 0..T and what backward needs.
std::vector<Tensor> hyperlstm_forward(Tensor xin, Tensor mask, bool has_mask, bool ln, Tensor h0, Tensor c0,
                                      Tensor hh0, Tensor hc0, Tensor w_h, Tensor w_hyper_h, Tensor w_zy, Tensor b_zy,
                                      Tensor w_d, Tensor b_d, Tensor gamma, Tensor shift, Tensor ln_c_w,
                                      Tensor ln_c_b, Tensor hyper_gamma, Tensor hyper_shift, Tensor hyper_ln_c_w,
                                      Tensor hyper_ln_c_b, int64_t path) {
  at::NoGradGuard no_grad;
  const int64_t T_ = xin.size(0), B = xin.size(1), H = h0.size(1), N = hh0.size(1);
  const int64_t P = w_d.size(0), Z = w_d.size(1);
  auto opt = xin.options();
  std::vector<Tensor> o = {
      at::empty({T_ + 1, B, H}, opt),       at::empty({T_ + 1, B, H}, opt),       // h_all c_all
      at::empty({T_ + 1, B, N}, opt),       at::empty({T_ + 1, B, N}, opt),       // hh_all hc_all
      at::empty({T_, B, G * H + G * N}, opt), at::empty({T_, B, P * Z + G * N}, opt),  // hp zy
      at::empty({T_, B, 2 * G, H}, opt),    at::empty({T_, B, G, H}, opt),        // dxh n
      at::empty({T_, B, G, H}, opt),        at::zeros({T_, B, G}, opt),           // act rstd
      at::empty({T_, B, H}, opt),           at::zeros({T_, B}, opt),              // cn rstd_c
      at::empty({T_, B, H}, opt),           at::empty({T_, B, G, N}, opt),        // tc ny
      at::empty({T_, B, G, N}, opt),        at::zeros({T_, B, G}, opt),           // acty rstd_y
      at::empty({T_, B, N}, opt),           at::zeros({T_, B}, opt),              // hcn rstd_hc
      at::empty({T_, B, N}, opt)};                                                // tcy
  o[0][0].copy_(h0);
  o[1][0].copy_(c0);
  o[2][0].copy_(hh0);
  o[3][0].copy_(hc0);
  Tensor b_d2 = b_d.reshape({P, H}).contiguous();
  AT_DISPATCH_FLOATING_TYPES(xin.scalar_type(), "hyperlstm_forward", [&] {
    forward_impl<scalar_t>(xin, mask, has_mask, ln, w_h, w_hyper_h, w_zy, b_zy, w_d, b_d2, gamma, shift, ln_c_w,
                           ln_c_b, hyper_gamma, hyper_shift, hyper_ln_c_w, hyper_ln_c_b, path, o);
  });
  return o;
}

// BPTT over the saved steps. Returns [dh0, dc0, dhh0, dhc0, dxin, dhp, dzz, dd, sums]; sums (B, SumCols.total):
// per row, summed over steps, the gradients of shift | gamma | b_d | ln_c_w | ln_c_b | hyper_shift |
// hyper_gamma | hyper_ln_c_w | hyper_ln_c_b | b_z (the LN parts stay zero without LN).
std::vector<Tensor> hyperlstm_backward(Tensor d_hs, Tensor dh, Tensor dc, Tensor dhh, Tensor dhc, Tensor xin,
                                       Tensor mask, bool has_mask, bool ln, std::vector<Tensor> saved, Tensor w_h,
                                       Tensor w_hyper_h, Tensor w_zy, Tensor w_d, Tensor gamma, Tensor ln_c_w,
                                       Tensor hyper_gamma, Tensor hyper_ln_c_w, int64_t path) {
  at::NoGradGuard no_grad;
  const int64_t T_ = xin.size(0), B = xin.size(1), H = dh.size(1), N = dhh.size(1);
  const int64_t P = w_d.size(0), Z = w_d.size(1);
  auto opt = xin.options();
  dh = dh.clone();
  dc = dc.clone();
  dhh = dhh.clone();
  dhc = dhc.clone();
  std::vector<Tensor> g = {at::empty({T_, B, G * H + G * N}, opt), at::empty({T_, B, G * H + G * N}, opt),
                           at::empty({T_, B, P * Z}, opt), at::empty({T_, B, P, H}, opt),
                           at::zeros({B, SumCols(H, N, P, Z).total}, opt)};
  AT_DISPATCH_FLOATING_TYPES(xin.scalar_type(), "hyperlstm_backward", [&] {
    backward_impl<scalar_t>(d_hs, dh, dc, dhh, dhc, xin, mask, has_mask, ln, saved, w_h, w_hyper_h, w_zy, w_d, gamma,
                            ln_c_w, hyper_gamma, hyper_ln_c_w, path, g);
  });
  std::vector<Tensor> out = {dh, dc, dhh, dhc};
  out.insert(out.end(), g.begin(), g.end());
  return out;
}

// Whether this build has the AVX-512 GEMM path (the compiler targeted AVX-512: -march=native on such a CPU).
bool hyperlstm_has_avx512() { return HAS_AVX512; }
