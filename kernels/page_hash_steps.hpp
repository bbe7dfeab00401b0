// kernels/page_hash_steps.hpp — SHA-256 (FIPS 180-4) of one 4 KiB page, for the host and the device.
//
// The archive's page identity (host/archive/page_hash.hpp) is computed by
// OpenSSL on the CPU backend; this is the same function written out for the
// page-hashing kernel (page_hash.hpp), one page per thread, so the GPU
// hashes the batch where there is one. No allocation, no exceptions, no
// tables in memory: the round constants are immediates once the rounds are
// unrolled. Tests compare every result with OpenSSL's.
#pragma once

#include "ptwalk/config.hpp"

namespace ptwalk {

inline constexpr u64 hashed_page_bytes = 4096;
inline constexpr u64 hashed_page_words = hashed_page_bytes / 8;

// A page's digest as the eight big-endian words of FIPS 180-4 (word 0 holds
// bytes 0..3 of the digest), and whether the page is all zero bytes (the
// archive does not store those), found on the same pass.
struct page_sha256 {
  u32 h[8];
  u32 zero;
};

namespace sha256_detail {

PTWALK_HD constexpr u32 rotr(u32 x, unsigned n) { return (x >> n) | (x << (32 - n)); }
PTWALK_HD constexpr u32 bswap(u32 x) {
  return (x >> 24) | ((x >> 8) & 0xff00u) | ((x << 8) & 0xff0000u) | (x << 24);
}

// One 64-byte block into `state`; `w` holds the block's 16 message words and
// is overwritten by the schedule (kept to 16 words, rolling).
PTWALK_HD inline void compress(u32 (&state)[8], u32 (&w)[16]) {
  constexpr u32 k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  u32 a = state[0], b = state[1], c = state[2], d = state[3], e = state[4], f = state[5], g = state[6],
      h = state[7];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (unsigned t = 0; t < 64; ++t) {
    if (t >= 16) {
      const u32 w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
      const u32 s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3);
      const u32 s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10);
      w[t & 15] += s0 + w[(t - 7) & 15] + s1;
    }
    const u32 t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[t] + w[t & 15];
    const u32 t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  state[0] += a, state[1] += b, state[2] += c, state[3] += d;
  state[4] += e, state[5] += f, state[6] += g, state[7] += h;
}

}  // namespace sha256_detail

// The page at `page` (512 little-endian words: its bytes in memory order).
PTWALK_HD inline page_sha256 hash_page(const u64* page) {
  page_sha256 out{{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19},
                  0};
  u64 any = 0;
  u32 w[16];
  for (u64 block = 0; block < hashed_page_words / 8; ++block) {
    for (unsigned i = 0; i < 8; ++i) {
      const u64 word = page[block * 8 + i];
      any |= word;
      // Message words are big-endian: bytes 0..3 of the pair are the low half.
      w[2 * i] = sha256_detail::bswap(static_cast<u32>(word));
      w[2 * i + 1] = sha256_detail::bswap(static_cast<u32>(word >> 32));
    }
    sha256_detail::compress(out.h, w);
  }
  // Padding of a 4096-byte message: 0x80, zeros, the bit length (32768).
  u32 pad[16] = {0x80000000u, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, static_cast<u32>(hashed_page_bytes * 8)};
  sha256_detail::compress(out.h, pad);
  out.zero = any == 0 ? 1 : 0;
  return out;
}

// One item per page of a chunk staged contiguously in device memory.
struct hash_chunk_page {
  const u64* pages;
  PTWALK_HD page_sha256 operator()(u64 i) const { return hash_page(pages + i * hashed_page_words); }
};

}  // namespace ptwalk
