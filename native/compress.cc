// fedgate gradient compression: blockwise int8/int4 quantization and top-k sparsification.
//
// The byte layout is documented in agent/compress/FORMAT.md; agent/compress/ts-codec.ts is the
// pure-TypeScript twin of this file and must produce the same bytes. Every float operation here is
// a single IEEE-754 binary32 operation (+, -, *, /) that JavaScript reproduces exactly with
// Math.fround (double rounding is innocuous for these operations: 53 >= 2*24+2), and binding.gyp
// disables FMA contraction. Integer tricks (abs/max on the bit pattern) are exact by construction.
#include <napi.h>

#include "sdnotify.h"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>


namespace {

// ---------------------------------------------------------------------------------------------
// Format (see FORMAT.md)
constexpr uint8_t kMagic[4] = {'F', 'G', 'C', 'Z'};
// Version 2 changed only the top-k layouts (indices as LEB128 gaps after the values): dense codecs
// are still written as version 1, byte for byte what older decoders read; both are decoded.
constexpr uint8_t kVersion = 2;
constexpr uint8_t kDenseVersion = 1;
constexpr size_t kHeader = 20;
constexpr uint8_t kFlagStochastic = 1;
enum Codec : uint8_t { kNone = 0, kInt8 = 1, kInt4 = 2, kTopk = 3, kTopkInt8 = 4 };
constexpr const char* kCodecNames[] = {"none", "int8", "int4", "topk", "topk-int8"};

struct Params {
  uint8_t codec = kNone;
  uint32_t n = 0;           // element count
  uint32_t blockSize = 0;   // quantizing codecs only, else 0
  uint32_t k = 0;           // kept elements (top-k codecs only, else 0)
  bool stochastic = false;  // quantizing codecs only
  uint32_t seed = 0;
};

bool quantizes(uint8_t c) { return c == kInt8 || c == kInt4 || c == kTopkInt8; }
bool sparse(uint8_t c) { return c == kTopk || c == kTopkInt8; }
uint64_t blocks(uint64_t count, uint32_t bs) { return bs ? (count + bs - 1) / bs : 0; }

uint8_t versionFor(uint8_t codec) { return sparse(codec) ? kVersion : kDenseVersion; }

// Bytes of the kept values of a top-k payload: f32[k], or scales f32[kb] + q i8[k].
uint64_t sparseValueBytes(const Params& p) {
  return p.codec == kTopk ? 4ull * p.k : 4 * blocks(p.k, p.blockSize) + p.k;
}

// Dense codecs; for top-k, everything but the index stream (version 2) or with absolute u32
// indices (version 1).
uint64_t fixedSize(const Params& p, uint8_t version) {
  switch (p.codec) {
    case kNone: return kHeader + 4ull * p.n;
    case kInt8: return kHeader + 4 * blocks(p.n, p.blockSize) + p.n;
    case kInt4: return kHeader + 4 * blocks(p.n, p.blockSize) + (p.n + 1ull) / 2;
    default: return kHeader + sparseValueBytes(p) + (version == 1 ? 4ull * p.k : 0);
  }
}

// LEB128 length of an unsigned 32-bit value.
inline uint32_t varintBytes(uint32_t v) { return v < (1u << 7) ? 1 : v < (1u << 14) ? 2 : v < (1u << 21) ? 3 : v < (1u << 28) ? 4 : 5; }

// The index stream of ascending indices: the first index, then each gap minus one.
uint64_t indexStreamBytes(const std::vector<uint32_t>& idx) {
  uint64_t total = 0;
  for (size_t j = 0; j < idx.size(); j++) total += varintBytes(j ? idx[j] - idx[j - 1] - 1 : idx[0]);
  return total;
}

// The most bytes k ascending indices below n can take (the gaps sum to at most n - k): see
// maxIndexBytes in format.ts, which the decoders' length check and the codec chooser share.
uint64_t maxIndexBytes(uint64_t n, uint64_t k) {
  static constexpr uint64_t kStep[] = {128, 16384, 2097152, 268435456};
  uint64_t bytes = k, budget = n - k, count = k, prev = 0;
  for (uint64_t t : kStep) {
    count = std::min(count, budget / (t - prev));
    budget -= count * (t - prev);
    bytes += count;
    prev = t;
  }
  return bytes;
}

inline uint32_t bitsOf(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float floatOf(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline void put32(uint8_t* p, uint32_t v) { p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }
inline uint32_t get32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | uint32_t(p[3]) << 24; }
// Payload floats/uint32 are little-endian; every supported target (x86-64, ARM64) is.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "fedgate compress assumes little-endian");

void writeHeader(uint8_t* o, const Params& p) {
  std::memcpy(o, kMagic, 4);
  o[4] = versionFor(p.codec);
  o[5] = p.codec;
  o[6] = (quantizes(p.codec) && p.stochastic) ? kFlagStochastic : 0;
  o[7] = 0;
  put32(o + 8, p.n);
  put32(o + 12, quantizes(p.codec) ? p.blockSize : 0);
  put32(o + 16, sparse(p.codec) ? p.k : 0);
}

// ---------------------------------------------------------------------------------------------
// Stochastic rounding noise: a counter-based hash, so element i's noise depends only on (seed, i)
// and the loop stays vectorizable. lowbias32 (C. Wellons) over a Weyl-scrambled counter.
inline uint32_t lowbias32(uint32_t x) {
  x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
  return x;
}
inline uint32_t streamKey(uint32_t seed) { return lowbias32(seed + 0x6a09e667U); }
inline uint32_t noise(uint32_t key, uint32_t i) { return lowbias32((i * 0x9e3779b9U) ^ key); }

// ---------------------------------------------------------------------------------------------
// Blockwise absmax quantization to symmetric levels -L..L (L = 127 or 7).
// Step s = the smallest float32 >= absmax / L, so |x / s| <= L holds exactly (also for subnormal
// blocks, where absmax / L would otherwise round to 0). y = x * (1/s) for a normal s, x / s for a
// subnormal s (whose 1/s would overflow). Then
//   deterministic: round half to even. |y| < L + 0.5 always, so no clamp is needed.
//   stochastic:    floor(y + u), u = (noise >> 8) * 2^-24 in [0, 1), clamped to -L..L.
//
// The kernels are written so that GCC/Clang vectorize them at -O3 for the baseline ISA (SSE2,
// NEON): no branches, restrict pointers, integer floor. On x86-64 the same source is compiled a
// second time for AVX2 and picked at run time (never a host-tuned -march: the binary runs on any
// x86-64); both paths do the same IEEE operations, so the bytes do not depend on the CPU.
#define FG_KERNEL inline __attribute__((always_inline))

// Absolute-value bit patterns order like the magnitudes; >= 0x7f800000 means Inf or NaN.
FG_KERNEL uint32_t maxAbsBits(const float* x, size_t len) {
  int32_t m = 0;
  for (size_t i = 0; i < len; i++) {
    int32_t a = int32_t(bitsOf(x[i]) & 0x7fffffffU);
    m = a > m ? a : m;
  }
  return uint32_t(m);
}

FG_KERNEL float stepFor(uint32_t absBits, float levels) {
  const float m = floatOf(absBits);
  float s = m / levels;
  if (double(s) * levels < double(m)) s = floatOf(bitsOf(s) + 1);  // round the step up
  return s;
}

template <bool Divide>
FG_KERNEL void roundBlock(const float* __restrict x, size_t len, float a, int8_t* __restrict q) {
  for (size_t i = 0; i < len; i++) {
    const float y = Divide ? x[i] / a : x[i] * a;
    // y + 1.5 * 2^23 rounds y half to even and leaves it, two's complement, in the low mantissa
    // bits (|y| < 2^22): its low byte is the int8.
    q[i] = int8_t(bitsOf(y + 12582912.0f));
  }
}

template <bool Divide>
FG_KERNEL void ditherBlock(const float* __restrict x, size_t len, float a, int32_t levels,
                           uint32_t key, uint32_t first, int8_t* __restrict q) {
  for (size_t i = 0; i < len; i++) {
    const float y = Divide ? x[i] / a : x[i] * a;
    const float u = float(int32_t(noise(key, first + uint32_t(i)) >> 8)) * 0x1p-24f;
    const float v = y + u;
    int32_t t = int32_t(v);  // truncation; |v| < L + 1
    t -= float(t) > v;       // ... made floor
    t = t < -levels ? -levels : t;
    t = t > levels ? levels : t;
    q[i] = int8_t(t);
  }
}

// Quantizes the elements x[start, start + len) (start a multiple of bs) into their blocks' scales
// and one int8 each in q[0, len). false: x holds Inf/NaN (the caller throws, output discarded).
FG_KERNEL bool quantizeRangeImpl(const float* x, uint64_t start, uint64_t len, uint32_t bs,
                                 float levels, bool stochastic, uint32_t key, uint8_t* scales,
                                 int8_t* q) {
  for (uint64_t off = 0; off < len; off += bs) {
    const size_t blen = size_t(std::min<uint64_t>(bs, len - off));
    const float* xb = x + start + off;
    int8_t* qb = q + off;
    const uint32_t m = maxAbsBits(xb, blen);
    if (m >= 0x7f800000U) return false;
    const float s = stepFor(m, levels);
    put32(scales + 4 * ((start + off) / bs), bitsOf(s));
    const uint32_t first = uint32_t(start + off);
    if (s == 0.0f) {
      std::memset(qb, 0, blen);
    } else if (s >= FLT_MIN) {
      if (stochastic) ditherBlock<false>(xb, blen, 1.0f / s, int32_t(levels), key, first, qb);
      else roundBlock<false>(xb, blen, 1.0f / s, qb);
    } else {
      if (stochastic) ditherBlock<true>(xb, blen, s, int32_t(levels), key, first, qb);
      else roundBlock<true>(xb, blen, s, qb);
    }
  }
  return true;
}

bool quantizeRangeBaseline(const float* x, uint64_t start, uint64_t len, uint32_t bs, float levels,
                           bool stochastic, uint32_t key, uint8_t* scales, int8_t* q) {
  return quantizeRangeImpl(x, start, len, bs, levels, stochastic, key, scales, q);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FG_HAVE_AVX2 1
__attribute__((target("avx2"))) bool quantizeRangeAvx2(const float* x, uint64_t start,
                                                       uint64_t len, uint32_t bs, float levels,
                                                       bool stochastic, uint32_t key,
                                                       uint8_t* scales, int8_t* q) {
  return quantizeRangeImpl(x, start, len, bs, levels, stochastic, key, scales, q);
}
#endif

// Which kernel runs: "avx2" where the CPU has it, else "baseline"; switchable for tests.
enum class Simd { kBaseline, kAvx2 };
Simd detectSimd() {
#ifdef FG_HAVE_AVX2
  if (__builtin_cpu_supports("avx2")) return Simd::kAvx2;
#endif
  return Simd::kBaseline;
}
std::atomic<Simd> gSimd{detectSimd()};

bool quantizeRange(const float* x, uint64_t start, uint64_t len, uint32_t bs, float levels,
                   bool stochastic, uint32_t key, uint8_t* scales, int8_t* q) {
#ifdef FG_HAVE_AVX2
  if (gSimd == Simd::kAvx2)
    return quantizeRangeAvx2(x, start, len, bs, levels, stochastic, key, scales, q);
#endif
  return quantizeRangeBaseline(x, start, len, bs, levels, stochastic, key, scales, q);
}

// int8: scales, then one int8 per element.
bool quantize(const float* x, uint32_t n, uint32_t bs, float levels, bool stochastic, uint32_t seed,
              uint8_t* scales, int8_t* q) {
  return quantizeRange(x, 0, n, bs, levels, stochastic, streamKey(seed), scales, q);
}

// int4: two's-complement nibbles, element 2j in the low nibble of byte j, 2j+1 in the high nibble;
// an odd count leaves the last high nibble 0. Quantizes through an int8 scratch, a chunk of whole
// blocks at a time so the scratch stays in cache.
bool quantize4(const float* x, uint32_t n, uint32_t bs, bool stochastic, uint32_t seed,
               uint8_t* scales, uint8_t* packed) {
  const uint64_t chunk = std::max<uint64_t>(1, 16384 / bs) * bs;
  std::vector<int8_t> q(size_t(std::min<uint64_t>(chunk, n)) + 1);
  const uint32_t key = streamKey(seed);
  for (uint64_t start = 0; start < n; start += chunk) {
    const uint32_t len = uint32_t(std::min<uint64_t>(chunk, n - start));
    if (!quantizeRange(x, start, len, bs, 7.0f, stochastic, key, scales, q.data())) return false;
    // A chunk starting at an odd element (odd block size) completes the previous byte.
    uint64_t e = start;
    uint32_t i = 0;
    if (e & 1) { packed[e >> 1] |= uint8_t((q[0] & 0x0f) << 4); i = 1; e++; }
    uint8_t* o = packed + (e >> 1);
    const uint32_t pairs = (len - i) / 2;
    const int8_t* __restrict src = q.data() + i;
    for (uint32_t j = 0; j < pairs; j++) {  // a pair as one little-endian u16: vectorizes
      uint16_t pair;
      std::memcpy(&pair, src + 2 * j, 2);
      o[j] = uint8_t((pair & 0x0f) | ((pair >> 4) & 0xf0));
    }
    if ((len - i) & 1) o[pairs] = uint8_t(q[len - 1] & 0x0f);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Top-k by magnitude, ties broken by the lower index, indices written ascending. Selection, not a
// sort: a 2^15-bin histogram of the magnitude's top bits finds the bin holding the k-th largest,
// nth_element inside that bin finds the exact threshold, a last pass emits the indices.
bool topkSelect(const float* x, uint32_t n, uint32_t k, uint32_t* idx) {
  std::vector<uint32_t> hist(1u << 15, 0);
  uint32_t worst = 0;
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t a = bitsOf(x[i]) & 0x7fffffffU;
    worst = std::max(worst, a);
    hist[a >> 16]++;
  }
  if (worst >= 0x7f800000U) return false;
  if (k == 0) return true;
  uint32_t above = 0, bin = (1u << 15) - 1;
  while (above + hist[bin] < k) above += hist[bin--];
  std::vector<uint32_t> cand;
  cand.reserve(hist[bin]);
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t a = bitsOf(x[i]) & 0x7fffffffU;
    if ((a >> 16) == bin) cand.push_back(a);
  }
  const uint32_t need = k - above;  // 1..hist[bin]
  std::nth_element(cand.begin(), cand.begin() + (need - 1), cand.end(), std::greater<uint32_t>());
  const uint32_t t = cand[need - 1];
  uint32_t ties = need;  // how many elements equal to t are kept (lowest indices first)
  for (uint32_t a : cand) ties -= a > t;
  for (uint32_t i = 0, j = 0; j < k; i++) {
    const uint32_t a = bitsOf(x[i]) & 0x7fffffffU;
    if (a > t || (a == t && ties > 0 && ties--)) idx[j++] = i;
  }
  return true;
}

// Phase 1 of encoding: for top-k, selects the indices (false: x holds Inf/NaN); returns the exact
// payload size.
bool prepare(const float* x, const Params& p, std::vector<uint32_t>& idx, uint64_t& size) {
  if (sparse(p.codec)) {
    idx.resize(p.k);
    if (!topkSelect(x, p.n, p.k, idx.data())) return false;
    size = fixedSize(p, kVersion) + indexStreamBytes(idx);
  } else {
    size = fixedSize(p, kDenseVersion);
  }
  return true;
}

// Phase 2: encodes x into out (exactly the size prepare() gave, all written). false: x holds Inf/NaN.
bool encodeInto(const float* x, const Params& p, const std::vector<uint32_t>& idx, uint8_t* out) {
  writeHeader(out, p);
  uint8_t* body = out + kHeader;
  switch (p.codec) {
    case kNone: {
      std::memcpy(body, x, 4ull * p.n);
      return maxAbsBits(x, p.n) < 0x7f800000U;
    }
    case kInt8:
      return quantize(x, p.n, p.blockSize, 127.0f, p.stochastic, p.seed, body,
                      reinterpret_cast<int8_t*>(body + 4 * blocks(p.n, p.blockSize)));
    case kInt4:
      return quantize4(x, p.n, p.blockSize, p.stochastic, p.seed, body,
                       body + 4 * blocks(p.n, p.blockSize));
    default: {  // top-k: the kept values, then the index stream
      std::vector<float> vals(p.k);
      for (uint32_t j = 0; j < p.k; j++) vals[j] = x[idx[j]];
      if (p.codec == kTopk) {
        std::memcpy(body, vals.data(), 4ull * p.k);
      } else if (!quantize(vals.data(), p.k, p.blockSize, 127.0f, p.stochastic, p.seed, body,
                           reinterpret_cast<int8_t*>(body + 4 * blocks(p.k, p.blockSize)))) {
        return false;
      }
      uint8_t* o = body + sparseValueBytes(p);
      for (uint32_t j = 0; j < p.k; j++) {
        uint32_t v = j ? idx[j] - idx[j - 1] - 1 : idx[0];
        while (v >= 0x80) { *o++ = uint8_t(v | 0x80); v >>= 7; }
        *o++ = uint8_t(v);
      }
      return true;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding. Every check the TypeScript decoder makes is made here, with the same message.
std::string parseHeader(const uint8_t* b, size_t len, Params& p, uint8_t& version) {
  if (len < kHeader)
    return "payload too short for a header (" + std::to_string(len) + " < 20 bytes)";
  if (std::memcmp(b, kMagic, 4) != 0) return "bad magic (not a fedgate compressed payload)";
  if (b[4] != 1 && b[4] != 2) return "unsupported format version " + std::to_string(b[4]);
  if (b[5] > kTopkInt8) return "unknown codec id " + std::to_string(b[5]);
  p.codec = b[5];
  version = b[4];
  if (version == 2 && !sparse(p.codec))
    return std::string("format version 2 is for top-k codecs only, not ") + kCodecNames[p.codec];
  if (b[6] & ~(quantizes(p.codec) ? kFlagStochastic : 0))
    return "unknown flags " + std::to_string(b[6]);
  if (b[7] != 0) return "reserved byte is " + std::to_string(b[7]) + ", not 0";
  p.n = get32(b + 8);
  p.blockSize = get32(b + 12);
  p.k = get32(b + 16);
  p.stochastic = b[6] & kFlagStochastic;
  const std::string name = kCodecNames[p.codec];
  if (quantizes(p.codec) ? p.blockSize == 0 : p.blockSize != 0)
    return "block size " + std::to_string(p.blockSize) + " is invalid for " + name;
  if (sparse(p.codec) ? (p.k > p.n || (p.k == 0 && p.n > 0)) : p.k != 0)
    return "k " + std::to_string(p.k) + " is invalid for " + name + " with n " + std::to_string(p.n);
  const uint64_t want = fixedSize(p, version);
  if (sparse(p.codec) && version == 2) {
    // Each index takes 1 to 5 bytes; the decoder checks that the stream fills the rest exactly.
    const uint64_t lo = want + p.k, hi = want + maxIndexBytes(p.n, p.k);
    if (len < lo || len > hi)
      return "length is " + std::to_string(len) + " bytes, " + name + " with n " + std::to_string(p.n) +
             " and k " + std::to_string(p.k) + " needs " + std::to_string(lo) + ".." + std::to_string(hi) +
             " (truncated or padded)";
  } else if (len != want) {
    return "length is " + std::to_string(len) + " bytes, " + name + " with n " +
           std::to_string(p.n) + " needs " + std::to_string(want) + " (truncated or padded)";
  }
  return "";
}

std::string dequantize(const uint8_t* scales, const int8_t* q, uint32_t count, uint32_t bs,
                       float* out) {
  for (uint64_t start = 0, b = 0; start < count; start += bs, b++) {
    const uint32_t sb = get32(scales + 4 * b);
    if (sb >= 0x7f800000U) return "scale of block " + std::to_string(b) + " is not a finite number >= 0";
    const float s = floatOf(sb);
    const size_t len = size_t(std::min<uint64_t>(bs, count - start));
    int bad = 0;
    for (size_t i = 0; i < len; i++) {
      bad |= q[start + i] == -128;
      out[start + i] = float(q[start + i]) * s;
    }
    if (bad) return "int8 value -128 in block " + std::to_string(b) + " (range is -127..127)";
  }
  return "";
}

std::string decodeBody(const uint8_t* b, size_t len, const Params& p, uint8_t version, float* out) {
  const uint8_t* body = b + kHeader;
  switch (p.codec) {
    case kNone:
      std::memcpy(out, body, 4ull * p.n);
      if (maxAbsBits(out, p.n) >= 0x7f800000U) return "value is not finite";
      return "";
    case kInt8:
      return dequantize(body, reinterpret_cast<const int8_t*>(body + 4 * blocks(p.n, p.blockSize)),
                        p.n, p.blockSize, out);
    case kInt4: {
      const uint8_t* packed = body + 4 * blocks(p.n, p.blockSize);
      for (uint64_t start = 0, blk = 0; start < p.n; start += p.blockSize, blk++) {
        const uint32_t sb = get32(body + 4 * blk);
        if (sb >= 0x7f800000U)
          return "scale of block " + std::to_string(blk) + " is not a finite number >= 0";
        const float s = floatOf(sb);
        const uint64_t end = std::min<uint64_t>(start + p.blockSize, p.n);
        int bad = 0;
        for (uint64_t i = start; i < end; i++) {
          const int nib = (packed[i >> 1] >> ((i & 1) * 4)) & 0x0f;
          bad |= nib == 8;
          out[i] = float((nib ^ 8) - 8) * s;  // explicit sign extension of a 4-bit value
        }
        if (bad) return "int4 value -8 in block " + std::to_string(blk) + " (range is -7..7)";
      }
      if ((p.n & 1) && (packed[p.n >> 1] >> 4) != 0) return "int4 padding nibble is not 0";
      return "";
    }
    default: {  // top-k
      const uint8_t* vals = version == 1 ? body + 4ull * p.k : body;
      std::vector<float> v(p.k);
      if (p.codec == kTopk) {
        std::memcpy(v.data(), vals, 4ull * p.k);
        if (maxAbsBits(v.data(), p.k) >= 0x7f800000U) return "value is not finite";
      } else {
        std::string err = dequantize(vals, reinterpret_cast<const int8_t*>(vals + 4 * blocks(p.k, p.blockSize)),
                                     p.k, p.blockSize, v.data());
        if (!err.empty()) return err;
      }
      int64_t prev = -1;
      if (version == 1) {  // absolute u32 indices
        for (uint32_t j = 0; j < p.k; j++) {
          const uint32_t i = get32(body + 4ull * j);
          if (int64_t(i) <= prev || i >= p.n)
            return "index " + std::to_string(i) + " at position " + std::to_string(j) +
                   " is out of order or out of range";
          out[i] = v[j];
          prev = i;
        }
        return "";
      }
      const uint8_t* s = body + sparseValueBytes(p);
      const uint8_t* end = b + len;
      for (uint32_t j = 0; j < p.k; j++) {
        uint64_t gap = 0;
        for (uint32_t shift = 0;; shift += 7) {
          if (s == end) return "index stream ends inside index " + std::to_string(j);
          const uint8_t byte = *s++;
          if (shift == 28 && byte > 0x0f) return "index " + std::to_string(j) + " overflows 32 bits";
          gap |= uint64_t(byte & 0x7f) << shift;
          if (!(byte & 0x80)) {
            if (byte == 0 && shift > 0) return "index " + std::to_string(j) + " is not minimally encoded";
            break;
          }
        }
        const uint64_t i = uint64_t(prev + 1) + gap;
        if (i >= p.n)
          return "index " + std::to_string(i) + " at position " + std::to_string(j) +
                 " is out of order or out of range";
        out[i] = v[j];
        prev = int64_t(i);
      }
      if (s != end) return "trailing bytes after the last index: " + std::to_string(end - s);
      return "";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// JavaScript bindings. The TypeScript facade validates options and throws the user-facing errors;
// these checks keep the addon memory-safe when called directly.
// encode(x: Float32Array, codec, blockSize, stochastic, seed, k)

std::string describeNonFinite(const float* x, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    const float v = x[i];
    if (v != v) return "input[" + std::to_string(i) + "] is NaN: compress input must be finite";
    if (v - v != 0.0f)
      return "input[" + std::to_string(i) + "] is " + (v > 0 ? "Infinity" : "-Infinity") +
             ": compress input must be finite";
  }
  return "input is not finite";
}

Params readParams(const Napi::CallbackInfo& info, Napi::Float32Array& x) {
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(env, "encode(x, codec, blockSize, stochastic, seed, k): x must be a Float32Array");
  for (int a = 1; a < 6; a++)
    if (a == 3 ? !info[a].IsBoolean() : !info[a].IsNumber())
      throw Napi::TypeError::New(env, "encode: argument " + std::to_string(a) + " has the wrong type");
  x = info[0].As<Napi::Float32Array>();
  Params p;
  const uint32_t codec = info[1].As<Napi::Number>().Uint32Value();
  if (codec > kTopkInt8) throw Napi::RangeError::New(env, "encode: unknown codec id");
  if (x.ElementLength() > UINT32_MAX) throw Napi::RangeError::New(env, "encode: more than 2^32-1 elements");
  p.codec = uint8_t(codec);
  p.n = uint32_t(x.ElementLength());
  p.blockSize = quantizes(p.codec) ? info[2].As<Napi::Number>().Uint32Value() : 0;
  p.stochastic = info[3].As<Napi::Boolean>().Value();
  p.seed = info[4].As<Napi::Number>().Uint32Value();
  p.k = sparse(p.codec) ? info[5].As<Napi::Number>().Uint32Value() : 0;
  if (quantizes(p.codec) && p.blockSize == 0) throw Napi::RangeError::New(env, "encode: block size must be >= 1");
  if (sparse(p.codec) && (p.k > p.n || (p.k == 0 && p.n > 0)))
    throw Napi::RangeError::New(env, "encode: k must be in 1..n");
  return p;
}

// Results are ordinary (V8-allocated, zero-filled) ArrayBuffers. Measured alternative, rejected:
// a private mapping advised for transparent huge pages, handed over as an external buffer, saves
// the ~2500 page faults of a fresh 10 MB result, but its latency varied 5-40 ms (THP compaction)
// and Node does not count external buffers towards GC pressure.
Napi::ArrayBuffer newResult(Napi::Env env, size_t size, uint8_t** data) {
  auto ab = Napi::ArrayBuffer::New(env, size);
  *data = static_cast<uint8_t*>(ab.Data());
  return ab;
}

Napi::Value Encode(const Napi::CallbackInfo& info) {
  Napi::Float32Array x;
  const Params p = readParams(info, x);
  std::vector<uint32_t> idx;
  uint64_t size64 = 0;
  if (!prepare(x.Data(), p, idx, size64))
    throw Napi::RangeError::New(info.Env(), describeNonFinite(x.Data(), p.n));
  const size_t size = size_t(size64);
  uint8_t* out;
  auto ab = newResult(info.Env(), size, &out);
  if (!encodeInto(x.Data(), p, idx, out))
    throw Napi::RangeError::New(info.Env(), describeNonFinite(x.Data(), p.n));
  return Napi::Uint8Array::New(info.Env(), size, ab, 0);
}

// Large tensors: copied into native memory (and checked) here on the main thread, encoded on the
// libuv thread pool; Execute never touches a JavaScript value.
class EncodeWorker : public Napi::AsyncWorker {
 public:
  EncodeWorker(Napi::Env env, std::unique_ptr<float[]> x, const Params& p)
      : Napi::AsyncWorker(env, "fedgate.compress.encode"), deferred_(Napi::Promise::Deferred::New(env)),
        x_(std::move(x)), p_(p) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      std::vector<uint32_t> idx;
      uint64_t size = 0;
      if (!prepare(x_.get(), p_, idx, size)) {
        SetError("input is not finite");
      } else {
        size_ = size_t(size);
        out_.reset(new uint8_t[size_ ? size_ : 1]);
        if (!encodeInto(x_.get(), p_, idx, out_.get())) SetError("input is not finite");
      }
    } catch (const std::exception& e) {
      SetError(std::string("encode failed: ") + e.what());
    }
    x_.reset();
  }
  void OnOK() override {
    uint8_t* data;
    auto ab = newResult(Env(), size_, &data);
    std::memcpy(data, out_.get(), size_);
    out_.reset();
    deferred_.Resolve(Napi::Uint8Array::New(Env(), size_, ab, 0));
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::unique_ptr<float[]> x_;
  std::unique_ptr<uint8_t[]> out_;
  size_t size_ = 0;
  Params p_;
};

Napi::Value EncodeAsync(const Napi::CallbackInfo& info) {
  Napi::Float32Array x;
  const Params p = readParams(info, x);
  std::unique_ptr<float[]> copy(new float[p.n ? p.n : 1]);
  std::memcpy(copy.get(), x.Data(), 4ull * p.n);
  if (maxAbsBits(copy.get(), p.n) >= 0x7f800000U)
    throw Napi::RangeError::New(info.Env(), describeNonFinite(copy.get(), p.n));
  auto* worker = new EncodeWorker(info.Env(), std::move(copy), p);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw Napi::TypeError::New(env, "decode(bytes): bytes must be a Uint8Array");
  auto bytes = info[0].As<Napi::Uint8Array>();
  Params p;
  uint8_t version = 0;
  std::string err = parseHeader(bytes.Data(), bytes.ByteLength(), p, version);
  if (err.empty()) {
    uint8_t* out;  // zero-filled: top-k scatters into it
    auto ab = newResult(env, 4ull * p.n, &out);
    err = decodeBody(bytes.Data(), bytes.ByteLength(), p, version, reinterpret_cast<float*>(out));
    if (err.empty()) return Napi::Float32Array::New(env, p.n, ab, 0);
  }
  throw Napi::Error::New(env, "corrupt payload: " + err);
}

// simd() -> "avx2" | "baseline"; simd("baseline") forces the baseline kernels (tests compare
// both paths), simd("avx2") returns them to AVX2 if the CPU has it.
Napi::Value SimdLevel(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), "simd(level): level must be a string");
    const std::string want = info[0].As<Napi::String>();
    if (want == "baseline") gSimd = Simd::kBaseline;
    else if (want == "avx2") gSimd = detectSimd();
    else throw Napi::RangeError::New(info.Env(), "simd(level): level must be 'baseline' or 'avx2'");
  }
  return Napi::String::New(info.Env(), gSimd == Simd::kAvx2 ? "avx2" : "baseline");
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("formatVersion", Napi::Number::New(env, kVersion));
  exports.Set("simd", Napi::Function::New(env, SimdLevel, "simd"));
  exports.Set("encode", Napi::Function::New(env, Encode, "encode"));
  exports.Set("encodeAsync", Napi::Function::New(env, EncodeAsync, "encodeAsync"));
  exports.Set("decode", Napi::Function::New(env, Decode, "decode"));
  fedgate::RegisterSdNotify(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(fedgate_compress, Init)
