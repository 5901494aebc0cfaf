#include "data/batch_fill.h"

#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/error.h"
#include "core/strings.h"

namespace forge::data {

ExpandedNormalization expandNormalization(const Normalization& n, const std::vector<int64_t>& sampleShape) {
  int64_t features = 1;
  for (int64_t d : sampleShape) features *= d;
  const int64_t channels = sampleShape.empty() ? 1 : sampleShape[0];
  auto expand = [&](const std::vector<double>& v, const char* key) {
    std::vector<float> out(features);
    const int64_t size = static_cast<int64_t>(v.size());
    if (size == 1) {
      std::fill(out.begin(), out.end(), static_cast<float>(v[0]));
    } else if (size == features) {
      for (int64_t j = 0; j < features; ++j) out[j] = static_cast<float>(v[j]);
    } else if (size == channels && sampleShape.size() >= 2) {
      const int64_t perChannel = features / channels;
      for (int64_t j = 0; j < features; ++j) out[j] = static_cast<float>(v[j / perChannel]);
    } else {
      throw ConfigError(concat("data.normalize.", key, " has ", size, " values; samples of shape ",
                               dimsText(sampleShape), " take 1, ", features, " (one per feature)",
                               sampleShape.size() >= 2 ? concat(" or ", channels, " (one per channel)") : ""));
    }
    return out;
  };
  ExpandedNormalization e;
  e.scale = static_cast<float>(n.scale);
  e.mean = expand(n.mean, "mean");
  std::vector<float> std = expand(n.std, "std");
  e.invStd.resize(features);
  for (int64_t j = 0; j < features; ++j) {
    if (!(std[j] > 0)) throw ConfigError(concat("data.normalize.std must be positive, feature ", j, " has ", std[j]));
    e.invStd[j] = 1.0f / std[j];
  }
  return e;
}

namespace {

template <typename T>
int64_t firstNonFinite(const T* row, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    if (!std::isfinite(row[j])) return j;
  }
  return -1;
}



// Converts one row; returns false when a value is not finite. NaN and Inf stay non-finite
// through the affine map, so the check reads the output's exponent bits (all ones) in the
// same pass. An integer OR reduction keeps the loop vectorized (a float sum would not be).
template <typename T>
inline bool convertRowImpl(const T* in, float* out, int64_t n, const float* a, const float* b) {
  uint32_t bad = 0;
  for (int64_t j = 0; j < n; ++j) {
    float v = static_cast<float>(in[j]) * a[j] + b[j];
    out[j] = v;
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

// Built for AVX2 and for plain x86-64, chosen at load time by the CPU: the conversion is
// the loader's hottest loop.
#if defined(__x86_64__) && defined(__GNUC__)
#define FORGE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FORGE_CLONES
#endif
FORGE_CLONES bool convertU8(const uint8_t* in, float* out, int64_t n, const float* a, const float* b) {
  return convertRowImpl(in, out, n, a, b);
}
FORGE_CLONES bool convertF32(const float* in, float* out, int64_t n, const float* a, const float* b) {
  return convertRowImpl(in, out, n, a, b);
}
FORGE_CLONES bool convertF64(const double* in, float* out, int64_t n, const float* a, const float* b) {
  return convertRowImpl(in, out, n, a, b);
}

#if defined(__x86_64__) && defined(__GNUC__)
// The conversion with AVX2 and FMA, one multiply-add per value. With one mean and std for
// every feature (the common case) a and b stay in registers instead of being loaded for
// each value.
__attribute__((target("avx2,fma"))) bool convertF32Fma(const float* in, float* out, int64_t n, const float* a,
                                                       const float* b, bool uniform) {
  const __m256i expMask = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  int64_t j = 0;
  if (uniform) {
    const __m256 va = _mm256_set1_ps(a[0]), vb = _mm256_set1_ps(b[0]);
    for (; j + 8 <= n; j += 8) {
      __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(in + j), va, vb);
      _mm256_storeu_ps(out + j, v);
      __m256i e = _mm256_and_si256(_mm256_castps_si256(v), expMask);
      bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(e, expMask));
    }
  }
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(in + j), _mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j));
    _mm256_storeu_ps(out + j, v);
    __m256i e = _mm256_and_si256(_mm256_castps_si256(v), expMask);
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(e, expMask));
  }
  bool ok = _mm256_testz_si256(bad, bad);
  return convertRowImpl(in + j, out + j, n - j, a + j, b + j) && ok;
}

__attribute__((target("avx2,fma"))) void convertU8Fma(const uint8_t* in, float* out, int64_t n, const float* a,
                                                      const float* b, bool uniform) {
  int64_t j = 0;
  if (uniform) {
    const __m256 va = _mm256_set1_ps(a[0]), vb = _mm256_set1_ps(b[0]);
    for (; j + 8 <= n; j += 8) {
      __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + j));
      __m256 raw = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
      _mm256_storeu_ps(out + j, _mm256_fmadd_ps(raw, va, vb));
    }
  }
  for (; j + 8 <= n; j += 8) {
    __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + j));
    __m256 raw = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
    _mm256_storeu_ps(out + j, _mm256_fmadd_ps(raw, _mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j)));
  }
  convertRowImpl(in + j, out + j, n - j, a + j, b + j);
}

const bool kHaveFma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif

// Token ids [from, from + n) of row r of stored rows at `base` (n_row ids a row) as int64.
void copyTokens(const void* base, at::ScalarType type, int64_t r, int64_t rowLen, int64_t from, int64_t n,
                int64_t* out) {
  switch (type) {
    case at::kByte: {
      const uint8_t* in = static_cast<const uint8_t*>(base) + r * rowLen + from;
      for (int64_t j = 0; j < n; ++j) out[j] = in[j];
      return;
    }
    case at::kInt: {
      const int32_t* in = static_cast<const int32_t*>(base) + r * rowLen + from;
      for (int64_t j = 0; j < n; ++j) out[j] = in[j];
      return;
    }
    case at::kLong:
      std::memcpy(out, static_cast<const int64_t*>(base) + r * rowLen + from, n * sizeof(int64_t));
      return;
    default: FORGE_CHECK(false, "unsupported token type ", type);
  }
}

// Row r of stored rows at `base` (type `type`, n values a row) into `out`, normalized.
// False when a value is not finite.
bool convert(const void* base, at::ScalarType type, int64_t r, float* out, int64_t n, const Affine& f) {
  switch (type) {
    case at::kByte: {
      const uint8_t* in = static_cast<const uint8_t*>(base) + r * n;
#if defined(__x86_64__) && defined(__GNUC__)
      if (kHaveFma) return convertU8Fma(in, out, n, f.a.data(), f.b.data(), f.uniform), true;
#endif
      convertU8(in, out, n, f.a.data(), f.b.data());
      return true;  // always finite
    }
    case at::kFloat: {
      const float* in = static_cast<const float*>(base) + r * n;
#if defined(__x86_64__) && defined(__GNUC__)
      if (kHaveFma) return convertF32Fma(in, out, n, f.a.data(), f.b.data(), f.uniform);
#endif
      return convertF32(in, out, n, f.a.data(), f.b.data());
    }
    case at::kDouble: return convertF64(static_cast<const double*>(base) + r * n, out, n, f.a.data(), f.b.data());
    default: FORGE_CHECK(false, "unsupported feature type ", type);
  }
  return false;
}

}  // namespace

// Which feature of row r is not finite (for the message; only called once one is known).
int64_t firstNonFinite(const void* base, at::ScalarType type, int64_t r, int64_t n) {
  if (type == at::kFloat) return firstNonFinite(static_cast<const float*>(base) + r * n, n);
  if (type == at::kDouble) return firstNonFinite(static_cast<const double*>(base) + r * n, n);
  return -1;  // integers are always finite
}

BatchFill::BatchFill(const SplitSource& source, const Affine& affine, int64_t rows, bool pinned)
    : source_(source),
      affine_(affine),
      type_(source.featureType()),
      targets_(source.targets()),
      tokens_(source.tokens()),
      n_(source.rowElements()) {
  inputs_ = targets_ == Targets::kNextTokens ? n_ - 1 : n_;
  targetValues_ = 1;
  for (int64_t d : source.targetShape()) targetValues_ *= d;
  auto opts = at::TensorOptions().pinned_memory(pinned);
  x_ = at::empty({rows, inputs_}, opts.dtype(tokens_ ? at::kLong : at::kFloat));
  y_ = at::empty({rows, targetValues_}, opts.dtype(targets_ == Targets::kValues ? at::kFloat : at::kLong));
  if (tokens_) {
    xTokens_ = x_.data_ptr<int64_t>();
  } else {
    xValues_ = x_.data_ptr<float>();
  }
  if (targets_ == Targets::kValues) {
    yValues_ = y_.data_ptr<float>();
    values_ = source.labels().data_ptr<float>();
  } else {
    yIds_ = y_.data_ptr<int64_t>();
    if (targets_ == Targets::kClasses) classes_ = source.labels().data_ptr<int64_t>();
  }
}

bool BatchFill::put(const void* base, int64_t r, int64_t sample, int64_t m) {
  if (tokens_) {
    copyTokens(base, type_, r, n_, 0, inputs_, xTokens_ + m * inputs_);
  } else if (!convert(base, type_, r, xValues_ + m * n_, n_, affine_)) {
    return false;
  }
  switch (targets_) {
    case Targets::kClasses: yIds_[m] = classes_[sample]; break;
    case Targets::kValues:
      std::memcpy(yValues_ + m * targetValues_, values_ + sample * targetValues_, targetValues_ * sizeof(float));
      break;
    case Targets::kNextTokens: copyTokens(base, type_, r, n_, 1, targetValues_, yIds_ + m * targetValues_); break;
  }
  return true;
}

Batch BatchFill::batch(int64_t m) const {
  std::vector<int64_t> ys{m};
  for (int64_t d : source_.targetShape()) ys.push_back(d);
  std::vector<int64_t> xs{m};
  for (int64_t d : source_.inputShape()) xs.push_back(d);
  at::Tensor bx = m < x_.size(0) ? x_.narrow(0, 0, m) : x_;
  at::Tensor by = m < y_.size(0) ? y_.narrow(0, 0, m) : y_;
  return Batch{bx.view(xs), by.view(ys)};
}

}  // namespace forge::data
