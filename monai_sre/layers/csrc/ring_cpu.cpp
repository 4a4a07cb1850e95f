// Copyright (c) monai_sre contributors
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
//
// The fused CPU kernel of a 2D or 3D SRE convolution (stride 1, dilation 1, one group, zero padding of the kernel
// radius), compiled on first use by monai_sre/layers/ring_cpp.py. Why hand-written: no library forms the band sums of
// a tile of pixels and feeds them into one matrix product, which is what the ring decomposition needs on CPU (oneDNN's
// depthwise filters cost one pass over memory per band, see benchmarks/README.md).
//
// The kernel works with disks instead of bands: disk b is the union of bands 0..b (a ball in 3D), and with V_b = W_b -
// W_{b+1} (V_last = W_last) the convolution is sum_b V_b D_b(x), D_b the sum of x over disk b. A disk of a radially
// symmetric kernel holds, in every kernel row (dy in 2D, (dz, dy) in 3D), one centred run of columns |dx| <= w_b
// (`widths`, -1 for an empty row), so D_b is a sum of horizontal box sums H_w of the input rows (a few dozen adds per
// channel and pixel for a 9x9 kernel instead of the 164 taps of the bands' bounding boxes). A task owns a run of
// output rows: it forms their disk sums in thread-local buffers, multiplies the (pixels, bands * C) disk matrix by the
// (bands * C, Cout) mixing matrix with one ATen product, adds the bias (in inference also a residual and a ReLU) and
// writes its rows of the output. For the default maps the disk sums of a row come straight from the input (disk_row,
// ball_row: everything in L1); other maps go through a buffer of box sums.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <utility>
#include <vector>

namespace {

// 16 floats, loaded and stored unaligned (and through float pointers: may_alias): one AVX-512 or two AVX2 registers.
typedef float vec16 __attribute__((vector_size(64), aligned(4), may_alias));
constexpr int64_t kLanes = 16;
// The vector of L floats as a template's choice (a typedef's attributes are dropped where it is a template argument,
// and the stores would assume 64-byte alignment).
template <int L>
struct Lanes;
template <>
struct Lanes<kLanes> {
  typedef vec16 type;
};
template <>
struct Lanes<1> {
  typedef float type __attribute__((vector_size(4), aligned(4), may_alias));
};

// f(std::integral_constant<int, i>) for i = 0..N-1, unrolled at compile time (the disk tables become constants).
template <typename F, int... I>
inline void static_for_each(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, typename F>
inline void static_for(F&& f) {
  static_for_each(f, std::make_integer_sequence<int, N>{});
}

// Horizontal box sums of `rows` input rows starting at input row `y_first` (rows outside 0..H-1 are zero), for the
// band maps without a compile-time table:
// hbuf[(row, x, w, c)] = sum_{|dx| <= w} x[y, x + dx, c], zero outside the image.
void box_sums(const float* image, float* hbuf, int64_t y_first, int64_t rows, int64_t H, int64_t W, int64_t R,
              int64_t C) {
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t y = y_first + i;
    float* out_row = hbuf + i * W * (R + 1) * C;
    if (y < 0 || y >= H) {
      std::fill(out_row, out_row + W * (R + 1) * C, 0.f);
      continue;
    }
    const float* in_row = image + y * W * C;
    for (int64_t x = 0; x < W; ++x) {
      float* __restrict__ h = out_row + x * (R + 1) * C;
      const float* __restrict__ centre = in_row + x * C;
      for (int64_t c = 0; c < C; ++c) h[c] = centre[c];
      for (int64_t w = 1; w <= R; ++w) {
        float* __restrict__ hw = h + w * C;
        const float* __restrict__ prev = h + (w - 1) * C;
        for (int64_t c = 0; c < C; ++c) hw[c] = prev[c];
        if (x - w >= 0) {
          const float* __restrict__ left = in_row + (x - w) * C;
          for (int64_t c = 0; c < C; ++c) hw[c] += left[c];
        }
        if (x + w < W) {
          const float* __restrict__ right = in_row + (x + w) * C;
          for (int64_t c = 0; c < C; ++c) hw[c] += right[c];
        }
      }
    }
  }
}

// The disks of the default band maps (one-voxel rings, monai_sre.layers.rings.ring_index) of k = 3, 5, 7, 9:
// kDisksK[b][k] is the half-width of disk b in kernel row k. With the table known at compile time the disk sums
// take no branch and no index arithmetic per tap.
constexpr int kDisks3[2][3] = {{-1, 0, -1}, {1, 1, 1}};
constexpr int kDisks5[3][5] = {{-1, -1, 0, -1, -1}, {-1, 1, 1, 1, -1}, {1, 2, 2, 2, 1}};
constexpr int kDisks7[4][7] = {
    {-1, -1, -1, 0, -1, -1, -1}, {-1, -1, 1, 1, 1, -1, -1}, {-1, 1, 2, 2, 2, 1, -1}, {1, 2, 3, 3, 3, 2, 1}};
constexpr int kDisks9[5][9] = {{-1, -1, -1, -1, 0, -1, -1, -1, -1}, {-1, -1, -1, 1, 1, 1, -1, -1, -1},
                               {-1, -1, 1, 2, 2, 2, 1, -1, -1}, {-1, 1, 2, 3, 3, 3, 2, 1, -1},
                               {2, 3, 4, 4, 4, 4, 4, 3, 2}};

template <int K>
constexpr int default_width(int b, int k) {
  if constexpr (K == 3) return kDisks3[b][k];
  if constexpr (K == 5) return kDisks5[b][k];
  if constexpr (K == 7) return kDisks7[b][k];
  return kDisks9[b][k];
}

template <int B, int K>
bool is_default(const int64_t* widths) {
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k)
      if (widths[b * K + k] != default_width<K>(b, k)) return false;
  return true;
}

template <int B, int K>
constexpr bool needs_width(int k, int w) {
  for (int b = 0; b < B; ++b)
    if (default_width<K>(b, k) >= w) return true;
  return false;
}

// Disk sums of output row y of one image for L channels from c0, for a default map, straight from the input:
// the pair sums P_j = x[y - j] + x[y + j] of the R + 1 row distances j (zero-padded by R columns: scratch, in L1),
// then per pixel the horizontal box sums of each P_j grown one half-width at a time (H_w = H_{w-1} + P_j[x - w] +
// P_j[x + w]), each added to the disks whose rows at distance j have that half-width: d[(x, b, c)] for the row.
// No box-sum buffer and no halo rows: 2.8 instead of 7.9 ms of disk sums for a 64-channel 32x32 batch of 32 k=9,
// one thread (the layer 17.7 instead of 22.1 ms).
template <int B, int K, int L>
void disk_row(const float* image, int64_t y, int64_t H, int64_t W, int64_t C, int64_t c0, float* scratch,
              float* d) {
  using V = typename Lanes<L>::type;
  constexpr int R = (K - 1) / 2;
  const int64_t Wp = W + 2 * R;
  V* P = reinterpret_cast<V*>(scratch);
  for (int j = 0; j <= R; ++j) {
    V* pj = P + j * Wp;
    for (int i = 0; i < R; ++i) pj[i] = pj[W + R + i] = V{};
    const bool above = y - j >= 0, below = j > 0 && y + j < H;
    const float* ra = image + (y - j) * W * C + c0;
    const float* rb = image + (y + j) * W * C + c0;
    for (int64_t x = 0; x < W; ++x) {
      V v{};
      if (above) v = *reinterpret_cast<const V*>(ra + x * C);
      if (below) v += *reinterpret_cast<const V*>(rb + x * C);
      pj[x + R] = v;
    }
  }
  for (int64_t x = 0; x < W; ++x) {
    V acc[B];
    for (int b = 0; b < B; ++b) acc[b] = V{};
    static_for<R + 1>([&](auto j) {
      const V* p = P + j * Wp + x + R;
      V h = p[0];
      static_for<B>([&](auto b) {
        if constexpr (default_width<K>(b, R + j) == 0) acc[b] += h;
      });
      static_for<R>([&](auto w_1) {
        constexpr int w = w_1 + 1;
        if constexpr (needs_width<B, K>(R + j, w)) {
          h += p[-w] + p[w];
          static_for<B>([&](auto b) {
            if constexpr (default_width<K>(b, R + j) == w) acc[b] += h;
          });
        }
      });
    });
    float* dx = d + x * B * C + c0;
    for (int b = 0; b < B; ++b) *reinterpret_cast<V*>(dx + b * C) = acc[b];
  }
}

// Disk sums of `rows` output rows of one image from row y0, blocks of 16 channels and the rest one by one:
// dbuf[(row, x, b, c)]. scratch: (R + 1) * (W + 2R) * 16 floats, 64-byte aligned.
template <int B, int K>
void disk_rows(const float* image, int64_t y0, int64_t rows, int64_t H, int64_t W, int64_t C, float* scratch,
               float* dbuf) {
  const int64_t vector_channels = C / kLanes * kLanes;
  for (int64_t i = 0; i < rows; ++i) {
    float* d = dbuf + i * W * B * C;
    for (int64_t c = 0; c < vector_channels; c += kLanes) disk_row<B, K, kLanes>(image, y0 + i, H, W, C, c, scratch, d);
    for (int64_t c = vector_channels; c < C; ++c) disk_row<B, K, 1>(image, y0 + i, H, W, C, c, scratch, d);
  }
}

using DiskRows = void (*)(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*, float*);

// disk_rows for a default map, nullptr for any other.
DiskRows default_disk_rows(const int64_t* widths, int64_t B, int64_t K) {
  if (B == 2 && K == 3 && is_default<2, 3>(widths)) return &disk_rows<2, 3>;
  if (B == 3 && K == 5 && is_default<3, 5>(widths)) return &disk_rows<3, 5>;
  if (B == 4 && K == 7 && is_default<4, 7>(widths)) return &disk_rows<4, 7>;
  if (B == 5 && K == 9 && is_default<5, 9>(widths)) return &disk_rows<5, 9>;
  return nullptr;
}

// The balls of the default 3D band maps (one-voxel rings, ring_index(k, 3)) of k = 3, 5, 7, 9: kBallsK[b][a][j] is the
// half-width of ball b in the kernel rows at plane distance a and row distance j from the centre (-1: no taps); the
// maps are symmetric in both distances.
constexpr int kBalls3[2][2][2] = {{{0, -1}, {-1, -1}}, {{1, 1}, {1, 0}}};
constexpr int kBalls5[3][3][3] = {{{0, -1, -1}, {-1, -1, -1}, {-1, -1, -1}}, {{1, 1, -1}, {1, 0, -1}, {-1, -1, -1}},
                                  {{2, 2, 1}, {2, 2, 1}, {1, 1, -1}}};
constexpr int kBalls7[4][4][4] = {
    {{0, -1, -1, -1}, {-1, -1, -1, -1}, {-1, -1, -1, -1}, {-1, -1, -1, -1}},
    {{1, 1, -1, -1}, {1, 0, -1, -1}, {-1, -1, -1, -1}, {-1, -1, -1, -1}},
    {{2, 2, 1, -1}, {2, 2, 1, -1}, {1, 1, -1, -1}, {-1, -1, -1, -1}},
    {{3, 3, 2, 1}, {3, 3, 2, 1}, {2, 2, 2, -1}, {1, 1, -1, -1}}};
constexpr int kBalls9[5][5][5] = {
    {{0, -1, -1, -1, -1}, {-1, -1, -1, -1, -1}, {-1, -1, -1, -1, -1}, {-1, -1, -1, -1, -1}, {-1, -1, -1, -1, -1}},
    {{1, 1, -1, -1, -1}, {1, 0, -1, -1, -1}, {-1, -1, -1, -1, -1}, {-1, -1, -1, -1, -1}, {-1, -1, -1, -1, -1}},
    {{2, 2, 1, -1, -1}, {2, 2, 1, -1, -1}, {1, 1, -1, -1, -1}, {-1, -1, -1, -1, -1}, {-1, -1, -1, -1, -1}},
    {{3, 3, 2, 1, -1}, {3, 3, 2, 1, -1}, {2, 2, 2, -1, -1}, {1, 1, -1, -1, -1}, {-1, -1, -1, -1, -1}},
    {{4, 4, 4, 3, 2}, {4, 4, 3, 3, 1}, {4, 3, 3, 2, 0}, {3, 3, 2, 1, -1}, {2, 1, 0, -1, -1}}};

template <int K>
constexpr int ball_width(int b, int a, int j) {
  if constexpr (K == 3) return kBalls3[b][a][j];
  if constexpr (K == 5) return kBalls5[b][a][j];
  if constexpr (K == 7) return kBalls7[b][a][j];
  return kBalls9[b][a][j];
}

template <int B, int K>
bool is_default_3d(const int64_t* widths) {  // widths: (B, K, K)
  constexpr int R = (K - 1) / 2;
  for (int b = 0; b < B; ++b)
    for (int kz = 0; kz < K; ++kz)
      for (int ky = 0; ky < K; ++ky)
        if (widths[(b * K + kz) * K + ky] != ball_width<K>(b, kz > R ? kz - R : R - kz, ky > R ? ky - R : R - ky))
          return false;
  return true;
}

template <int B, int K>
constexpr bool ball_needs_width(int a, int j, int w) {
  for (int b = 0; b < B; ++b)
    if (ball_width<K>(b, a, j) >= w) return true;
  return false;
}

// Ball sums of output row (z, y) of one volume for L channels from c0, for a default 3D map, straight from the input:
// the sums Q_{a,j} of the up to four input rows (z -+ a, y -+ j) for every plane and row distance that a ball reaches
// (zero-padded by R columns: scratch, in L1), then per voxel the horizontal box sums of each Q grown one half-width at
// a time, added to the balls whose rows at distances (a, j) have that half-width: d[(x, b, c)] for the row. The 3D
// twin of disk_row: about 50 vector adds per voxel and 16 channels for k = 5 where the bands' depthwise filters take
// 153 taps per voxel and channel.
template <int B, int K, int L>
void ball_row(const float* volume, int64_t z, int64_t y, int64_t D, int64_t H, int64_t W, int64_t C, int64_t c0,
              float* scratch, float* d) {
  using V = typename Lanes<L>::type;
  constexpr int R = (K - 1) / 2;
  const int64_t Wp = W + 2 * R;
  V* Q = reinterpret_cast<V*>(scratch);
  static_for<R + 1>([&](auto a) {
    static_for<R + 1>([&](auto j) {
      if constexpr (ball_needs_width<B, K>(a, j, 0)) {
        V* q = Q + (a * (R + 1) + j) * Wp;
        for (int i = 0; i < R; ++i) q[i] = q[W + R + i] = V{};
        const float* rows[4];
        int n = 0;
        for (int sa = 0; sa < (a > 0 ? 2 : 1); ++sa) {
          const int64_t zz = sa == 0 ? z - a : z + a;
          if (zz < 0 || zz >= D) continue;
          for (int sj = 0; sj < (j > 0 ? 2 : 1); ++sj) {
            const int64_t yy = sj == 0 ? y - j : y + j;
            if (yy >= 0 && yy < H) rows[n++] = volume + (zz * H + yy) * W * C + c0;
          }
        }
        for (int64_t x = 0; x < W; ++x) {
          V v{};
          for (int r = 0; r < n; ++r) v += *reinterpret_cast<const V*>(rows[r] + x * C);
          q[x + R] = v;
        }
      }
    });
  });
  for (int64_t x = 0; x < W; ++x) {
    V acc[B];
    for (int b = 0; b < B; ++b) acc[b] = V{};
    static_for<R + 1>([&](auto a) {
      static_for<R + 1>([&](auto j) {
        if constexpr (ball_needs_width<B, K>(a, j, 0)) {
          const V* p = Q + (a * (R + 1) + j) * Wp + x + R;
          V h = p[0];
          static_for<B>([&](auto b) {
            if constexpr (ball_width<K>(b, a, j) == 0) acc[b] += h;
          });
          static_for<R>([&](auto w_1) {
            constexpr int w = w_1 + 1;
            if constexpr (ball_needs_width<B, K>(a, j, w)) {
              h += p[-w] + p[w];
              static_for<B>([&](auto b) {
                if constexpr (ball_width<K>(b, a, j) == w) acc[b] += h;
              });
            }
          });
        }
      });
    });
    float* dx = d + x * B * C + c0;
    for (int b = 0; b < B; ++b) *reinterpret_cast<V*>(dx + b * C) = acc[b];
  }
}

// Ball sums of `rows` output rows of plane z of one volume from row y0, blocks of 16 channels and the rest one by
// one: dbuf[(row, x, b, c)]. scratch: (R + 1)^2 * (W + 2R) * 16 floats, 64-byte aligned.
template <int B, int K>
void ball_rows(const float* volume, int64_t z, int64_t y0, int64_t rows, int64_t D, int64_t H, int64_t W, int64_t C,
               float* scratch, float* dbuf) {
  const int64_t vector_channels = C / kLanes * kLanes;
  for (int64_t i = 0; i < rows; ++i) {
    float* d = dbuf + i * W * B * C;
    for (int64_t c = 0; c < vector_channels; c += kLanes)
      ball_row<B, K, kLanes>(volume, z, y0 + i, D, H, W, C, c, scratch, d);
    for (int64_t c = vector_channels; c < C; ++c) ball_row<B, K, 1>(volume, z, y0 + i, D, H, W, C, c, scratch, d);
  }
}

using BallRows = void (*)(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float*, float*);

// ball_rows for a default 3D map, nullptr for any other.
BallRows default_ball_rows(const int64_t* widths, int64_t B, int64_t K) {
  if (B == 2 && K == 3 && is_default_3d<2, 3>(widths)) return &ball_rows<2, 3>;
  if (B == 3 && K == 5 && is_default_3d<3, 5>(widths)) return &ball_rows<3, 5>;
  if (B == 4 && K == 7 && is_default_3d<4, 7>(widths)) return &ball_rows<4, 7>;
  if (B == 5 && K == 9 && is_default_3d<5, 9>(widths)) return &ball_rows<5, 9>;
  return nullptr;
}

// Disk (ball) sums of `rows` output rows of one image (plane) for any band map (other ring counts, other kernel
// sizes) from box sums: hbuf holds, for each of the P kernel planes (1 in 2D, K in 3D: planes z - R .. z + R), the
// box sums of rows y0 - R .. y0 + rows + R - 1 (h_plane floats apart, zero outside the image or volume); widths is
// (B, P, K): dbuf[(row, x, b, c)] = sum_{kz, ky} H_{w(b, kz, ky)}[kz, row + ky, x, c].
void disk_sums_any(const int64_t* widths, const float* hbuf, int64_t h_plane, float* dbuf, int64_t rows, int64_t W,
                   int64_t C, int64_t B, int64_t P, int64_t K) {
  const int64_t R = (K - 1) / 2;
  const int64_t h_row = W * (R + 1) * C;
  for (int64_t y = 0; y < rows; ++y) {
    for (int64_t x = 0; x < W; ++x) {
      float* __restrict__ d = dbuf + (y * W + x) * B * C;
      std::fill(d, d + B * C, 0.f);
      for (int64_t b = 0; b < B; ++b) {
        float* __restrict__ dst = d + b * C;
        for (int64_t kz = 0; kz < P; ++kz) {
          for (int64_t ky = 0; ky < K; ++ky) {
            const int64_t w = widths[(b * P + kz) * K + ky];
            if (w < 0) continue;
            const float* __restrict__ src = hbuf + kz * h_plane + (y + ky) * h_row + x * (R + 1) * C + w * C;
            for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
          }
        }
      }
    }
  }
}

// For every task (a run of about `tile_pixels` output pixels, whole rows), the disk (ball) sums of x's channels over
// the task's pixels, handed to `use(task, first_row, end_row, disk_sums)` as a (pixels, B * C) row-major buffer.
// Rows are counted over the whole batch: (n, y) in 2D, (n, z, y) in 3D. at::parallel_for spreads the tasks over the
// threads; `use` runs on the thread that formed the sums.
template <typename Use>
void for_each_tile(const torch::Tensor& x, const std::vector<int64_t>& table, int64_t B, int64_t K,
                   int64_t tile_pixels, const Use& use) {
  const bool volume = x.dim() == 5;
  const int64_t N = x.size(0), C = x.size(1), D = volume ? x.size(2) : 1, H = x.size(-2), W = x.size(-1);
  const int64_t R = (K - 1) / 2;
  const float* src = x.data_ptr<float>();
  const int64_t total_rows = N * D * H;
  // At least kMinTasks tasks, so that a layer of few pixels (512 channels at 4x4, batch 32: one tile of 512 pixels)
  // still spreads over threads; a fixed count rather than the thread count keeps the result bitwise the same at
  // any number of threads.
  constexpr int64_t kMinTasks = 4;
  const int64_t group = std::max<int64_t>(1, std::min<int64_t>({total_rows, tile_pixels / std::max<int64_t>(W, 1),
                                                                (total_rows + kMinTasks - 1) / kMinTasks}));
  const int64_t tasks = (total_rows + group - 1) / group;
  const DiskRows direct = volume ? nullptr : default_disk_rows(table.data(), B, K);
  const BallRows direct_3d = volume ? default_ball_rows(table.data(), B, K) : nullptr;
  const int64_t halo_rows = std::min(group, H) + 2 * R;  // box-sum rows of one plane for a task's rows of one plane
  at::parallel_for(0, tasks, 1, [&](int64_t first, int64_t last) {
    // the default maps' row scratch (64-byte aligned), or the other maps' box sums with their halo rows (and in 3D
    // the K planes around the output plane)
    const int64_t scratch_rows = direct ? R + 1 : (direct_3d ? (R + 1) * (R + 1) : 0);
    std::vector<float> scratch(scratch_rows > 0 ? scratch_rows * (W + 2 * R) * kLanes + kLanes : 0);
    const int64_t h_plane = halo_rows * W * (R + 1) * C;
    std::vector<float> hbuf(direct || direct_3d ? 0 : (volume ? K : 1) * h_plane);
    std::vector<float> dbuf(group * W * B * C);
    float* aligned = scratch.data() + (kLanes - reinterpret_cast<uintptr_t>(scratch.data()) / sizeof(float) % kLanes) % kLanes;
    for (int64_t task = first; task < last; ++task) {
      const int64_t r0 = task * group, r1 = std::min(total_rows, r0 + group);
      for (int64_t r = r0; r < r1;) {  // the task's rows of one plane at a time
        const int64_t plane = r / H, y0 = r % H, y1 = std::min(H, y0 + (r1 - r)), rows = y1 - y0;
        const float* image = src + plane * H * W * C;  // 2D: image `plane`; 3D: plane z of volume n
        float* d = dbuf.data() + (r - r0) * W * B * C;
        if (direct) {
          direct(image, y0, rows, H, W, C, aligned, d);
        } else if (direct_3d) {
          const int64_t z = plane % D;
          direct_3d(image - z * H * W * C, z, y0, rows, D, H, W, C, aligned, d);
        } else {  // box sums of the P planes around the output plane (2D: the image), then the disks
          const int64_t z = plane % D, P = volume ? K : 1, Rz = (P - 1) / 2;
          const int64_t stride = (rows + 2 * R) * W * (R + 1) * C;  // this segment's box sums per plane
          for (int64_t kz = 0; kz < P; ++kz) {
            float* h = hbuf.data() + kz * stride;
            if (z - Rz + kz < 0 || z - Rz + kz >= D)
              std::fill(h, h + stride, 0.f);
            else
              box_sums(image + (kz - Rz) * H * W * C, h, y0 - R, rows + 2 * R, H, W, R, C);
          }
          disk_sums_any(table.data(), hbuf.data(), stride, d, rows, W, C, B, P, K);
        }
        r += rows;
      }
      use(task, r0, r1, dbuf.data());
    }
  });
}

at::MemoryFormat channels_last_format(int64_t dim) {
  return dim == 5 ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::ChannelsLast;
}

void check_input(const torch::Tensor& x, const char* name) {
  TORCH_CHECK((x.dim() == 4 || x.dim() == 5) && x.scalar_type() == torch::kFloat && x.device().is_cpu() &&
                  x.is_contiguous(channels_last_format(x.dim())),
              "disk_conv: ", name, " must be a channels-last float32 CPU tensor (N, C, H, W) or (N, C, D, H, W), "
              "got ", x.sizes());
}

// The widths table as a flat vector: (B, K) for 2D, (B, K, K) for 3D, K odd.
std::vector<int64_t> check_widths(const torch::Tensor& widths, int64_t image_dim) {
  TORCH_CHECK(widths.dim() == image_dim - 2 && widths.scalar_type() == torch::kLong && widths.size(-1) % 2 == 1 &&
                  (widths.dim() == 2 || widths.size(1) == widths.size(2)),
              "disk_conv: widths must be int64 (bands, K) for a 2D input or (bands, K, K) for a 3D one, K odd, got ",
              widths.sizes(), " for a ", image_dim, "D input");
  const auto table = widths.contiguous();
  return std::vector<int64_t>(table.data_ptr<int64_t>(), table.data_ptr<int64_t>() + table.numel());
}

// The forward product of a tile, rows = left x right (float32 CPU matrices, right of any strides): oneDNN's matmul
// (PyTorch's at::native::mkldnn_matmul) where PyTorch has oneDNN and the product is large, else ATen's (MKL or
// OpenBLAS). One thread, Zen 4 EPYC: oneDNN's JIT kernels took the products of depth >= 256 and >= 2^23 MACs 4-10%
// faster than MKL's sgemm (52.1 against 48.1 GMAC/s for (512 x 320) x (320 x 64), 56.1 against 51.7 for (512 x 768)
// x (768 x 256)) and smaller ones up to 6x slower (a 1- or 3-channel stem); SRE-ResNet-18's 2D inference became
// 1.09x as fast at one thread and 1.10x at two (benchmarks/revision_ab.py). A training step did not gain (674
// against 660 ms with the backward's products on oneDNN too, 0.97-0.98x with the forward's alone: oneDNN allocates
// its scratchpad per call, and in a training process that memory is mapped afresh), so only inference asks for it
// (`onednn`; ring_cpp.py leaves it false under MONAI_SRE_ONEDNN=0).
using MatmulFn = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, float, float);

MatmulFn find_onednn_matmul() {
  if (!at::hasMKLDNN()) return nullptr;
  // void at::native::mkldnn_matmul(const Tensor& mat1, const Tensor& mat2, const Tensor& result, float beta, float
  // alpha), result = beta * result + alpha * mat1 x mat2: exported by libtorch_cpu, but no header ships it, so it is
  // looked up by its (Itanium ABI) name at run time and a PyTorch without it still loads this module.
  Dl_info library;
  if (dladdr(reinterpret_cast<void*>(&at::hasMKLDNN), &library) == 0 || library.dli_fname == nullptr) return nullptr;
  void* handle = dlopen(library.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return nullptr;
  const auto matmul = reinterpret_cast<MatmulFn>(dlsym(handle, "_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff"));
  if (matmul == nullptr) return nullptr;
  try {  // one small product against ATen's before it is trusted
    const auto left = torch::arange(12, torch::kFloat).view({3, 4}), right = torch::arange(8, torch::kFloat).view({2, 4});
    auto out = torch::full({3, 2}, std::nanf(""));
    matmul(left, right.t(), out, 0.f, 1.f);
    return torch::equal(out, at::mm(left, right.t())) ? matmul : nullptr;
  } catch (const std::exception&) {
    return nullptr;
  }
}

MatmulFn onednn_matmul() {
  static const MatmulFn matmul = find_onednn_matmul();
  return matmul;
}

void forward_product(const torch::Tensor& left, const torch::Tensor& right, torch::Tensor& rows, bool onednn) {
  const MatmulFn matmul = onednn ? onednn_matmul() : nullptr;
  if (matmul != nullptr && left.size(1) >= 256 && left.size(0) * left.size(1) * right.size(1) >= (int64_t{1} << 23))
    matmul(left, right, rows, 0.f, 1.f);
  else
    at::mm_out(rows, left, right);
}

}  // namespace

// x: (N, C, H, W) or (N, C, D, H, W) float32 on CPU, stored channels-last. widths: the half-width of disk b in each
// kernel row (-1: no taps), (B, K) in 2D, (B, K, K) in 3D (row (kz, ky)), K = 2R + 1 odd. mixing: (B * C, Cout)
// float32, row b * C + c = V_b[:, c]. bias: (Cout,) or an empty tensor. residual: an empty tensor or a channels-last
// float32 tensor of the output's shape, added to the output; relu: clamp the output at zero after that. tile_pixels:
// about how many output pixels one product covers. onednn: the large products may run on oneDNN (forward_product;
// inference).
// Returns relu?(conv(x) + bias + residual), x's shape with Cout channels, float32 stored channels-last (a tensor of
// its own). The bias, residual and ReLU are applied to each tile right after its product, while it is in cache: a
// residual block's separate add and ReLU passes over memory are gone (inference only: no autograd).
torch::Tensor disk_conv(const torch::Tensor& x, const torch::Tensor& widths, const torch::Tensor& mixing,
                        const torch::Tensor& bias, const torch::Tensor& residual, bool relu, int64_t tile_pixels,
                        bool onednn) {
  check_input(x, "x");
  const auto table = check_widths(widths, x.dim());
  const int64_t C = x.size(1), W = x.size(-1), B = widths.size(0), K = widths.size(-1);
  TORCH_CHECK(mixing.dim() == 2 && mixing.size(0) == B * C && mixing.scalar_type() == torch::kFloat,
              "disk_conv: mixing must be float32 (bands * C = ", B * C, ", Cout), got ", mixing.sizes());
  const int64_t Cout = mixing.size(1);
  TORCH_CHECK(!bias.defined() || bias.numel() == 0 || bias.numel() == Cout, "disk_conv: bias must have ", Cout,
              " elements, got ", bias.numel());
  auto shape = x.sizes().vec();
  shape[1] = Cout;
  const bool add = residual.defined() && residual.numel() > 0;
  if (add) {
    check_input(residual, "residual");
    TORCH_CHECK(residual.sizes() == torch::IntArrayRef(shape), "disk_conv: residual must have the output's shape ",
                torch::IntArrayRef(shape), ", got ", residual.sizes());
  }
  auto out = torch::empty(shape, x.options().memory_format(channels_last_format(x.dim())));
  if (out.numel() == 0) return out;
  const auto& mix = mixing;  // any strides: the product reads a transposed matrix as it is
  const auto shift = (bias.defined() && bias.numel() > 0) ? bias.contiguous() : torch::Tensor();
  float* dst = out.data_ptr<float>();
  const float* shift_ptr = shift.defined() ? shift.data_ptr<float>() : nullptr;
  const float* res_ptr = add ? residual.data_ptr<float>() : nullptr;
  for_each_tile(x, table, B, K, tile_pixels, [&](int64_t, int64_t r0, int64_t r1, float* sums) {
    const int64_t pixels = (r1 - r0) * W;
    auto rows = torch::from_blob(dst + r0 * W * Cout, {pixels, Cout}, x.options());
    forward_product(torch::from_blob(sums, {pixels, B * C}, x.options()), mix, rows, onednn);
    if (shift_ptr == nullptr && res_ptr == nullptr && !relu) return;
    float* __restrict__ o = dst + r0 * W * Cout;
    const float* __restrict__ r = add ? res_ptr + r0 * W * Cout : nullptr;
    for (int64_t p = 0; p < pixels; ++p, o += Cout) {
      if (shift_ptr != nullptr)
        for (int64_t c = 0; c < Cout; ++c) o[c] += shift_ptr[c];
      if (r != nullptr) {
        for (int64_t c = 0; c < Cout; ++c) o[c] += r[c];
        r += Cout;
      }
      if (relu)
        for (int64_t c = 0; c < Cout; ++c) o[c] = std::max(o[c], 0.f);
    }
  });
  return out;
}

// The mixing matrices of band weights (Cout, C, rings), float32: V_i = W_{bands[i]} - W_{bands[i + 1]} (the last one
// W_{bands[n - 1]}), times scale[o] per output channel when scale (Cout,) is not empty (an inference-mode norm
// folded in the same pass), in one pass over the weights. transposed = false: (Cout, n * C), row o = [V_0[o, :],
// ..., V_{n-1}[o, :]], returned as its transposed view (n * C, Cout), the forward product's right operand as it
// reads it; true: (n * Cout, C), row i * Cout + o = V_i[o, :], the input gradient's.
torch::Tensor disk_mixing(const torch::Tensor& weight, const std::vector<int64_t>& bands, bool transposed,
                          const torch::Tensor& scale) {
  TORCH_CHECK(weight.dim() == 3 && weight.scalar_type() == torch::kFloat && weight.device().is_cpu(),
              "disk_mixing: weight must be a float32 CPU tensor (Cout, C, rings), got ", weight.sizes());
  const auto w = weight.contiguous();
  const int64_t Cout = w.size(0), C = w.size(1), rings = w.size(2), n = static_cast<int64_t>(bands.size());
  TORCH_CHECK(n >= 1, "disk_mixing: no bands");
  for (const int64_t b : bands) TORCH_CHECK(b >= 0 && b < rings, "disk_mixing: band ", b, " outside 0..", rings - 1);
  const bool scaled = scale.defined() && scale.numel() > 0;
  TORCH_CHECK(!scaled || (scale.numel() == Cout && scale.scalar_type() == torch::kFloat && scale.device().is_cpu()),
              "disk_mixing: scale must be a float32 CPU tensor of ", Cout, " elements, got ", scale.sizes());
  const auto factors = scaled ? scale.contiguous() : torch::Tensor();
  const float* factor = scaled ? factors.data_ptr<float>() : nullptr;
  auto v = transposed ? torch::empty({n * Cout, C}, w.options()) : torch::empty({Cout, n * C}, w.options());
  const float* src = w.data_ptr<float>();
  float* dst = v.data_ptr<float>();
  at::parallel_for(0, Cout, 16, [&](int64_t first, int64_t last) {
    for (int64_t o = first; o < last; ++o) {
      const float* w_o = src + o * C * rings;  // (C, rings)
      const float f = scaled ? factor[o] : 1.f;
      for (int64_t i = 0; i < n; ++i) {  // one contiguous row of C per band: V_i[o, :]
        float* __restrict__ out = dst + (transposed ? i * Cout + o : o * n + i) * C;
        const float* __restrict__ band = w_o + bands[i];
        if (i + 1 < n) {
          const float* __restrict__ next = w_o + bands[i + 1];
          for (int64_t c = 0; c < C; ++c) out[c] = (band[c * rings] - next[c * rings]) * f;
        } else {
          for (int64_t c = 0; c < C; ++c) out[c] = band[c * rings] * f;
        }
      }
    }
  });
  return transposed ? v : v.t();
}

// The backward of disk_conv from the disk sums of the output gradient (the disks are symmetric, so summing over
// them is its own adjoint): grad_x = D(grad) @ mixing_t, and grad_v[b] = sum over pixels of D_b(grad)^T x, the
// gradient of the disk mixing V. grad: (N, Cout, *spatial), x: (N, C, *spatial), both channels-last float32;
// mixing_t: (B * Cout, C), row b * Cout + o = V_b[o, :] (read only when need_x). Returns {grad_x or an empty tensor,
// grad_v (B, Cout, C) or an empty tensor}. grad_v adds one partial per thread, in thread order.
std::vector<torch::Tensor> disk_conv_backward(const torch::Tensor& grad, const torch::Tensor& x,
                                              const torch::Tensor& widths, const torch::Tensor& mixing_t, bool need_x,
                                              bool need_w, int64_t tile_pixels) {
  check_input(grad, "grad");
  check_input(x, "x");
  const auto table = check_widths(widths, x.dim());
  const int64_t C = x.size(1), W = x.size(-1), B = widths.size(0), Cout = grad.size(1);
  auto grad_shape = grad.sizes().vec(), x_shape = x.sizes().vec();
  grad_shape[1] = x_shape[1] = 0;
  TORCH_CHECK(grad_shape == x_shape, "disk_conv_backward: grad ", grad.sizes(), " does not match x ", x.sizes());
  TORCH_CHECK(!need_x || (mixing_t.dim() == 2 && mixing_t.size(0) == B * Cout && mixing_t.size(1) == C),
              "disk_conv_backward: mixing_t must be (bands * Cout, C), got ", mixing_t.sizes());
  torch::Tensor grad_x, partials;
  const auto mix = need_x ? mixing_t.contiguous() : torch::Tensor();
  if (need_x) grad_x = torch::empty(x.sizes(), x.options().memory_format(channels_last_format(x.dim())));
  if (need_w) partials = torch::zeros({at::get_num_threads(), B * Cout, C}, x.options());
  if (x.numel() == 0 || grad.numel() == 0) {
    if (need_x) grad_x.zero_();
    return {need_x ? grad_x : torch::Tensor(), need_w ? partials.sum(0).view({B, Cout, C}) : torch::Tensor()};
  }
  float* gx = need_x ? grad_x.data_ptr<float>() : nullptr;
  const float* xs = x.data_ptr<float>();
  for_each_tile(grad, table, B, widths.size(-1), tile_pixels, [&](int64_t, int64_t r0, int64_t r1, float* sums) {
    const int64_t pixels = (r1 - r0) * W;
    auto lifted = torch::from_blob(sums, {pixels, B * Cout}, x.options());
    if (need_x) {
      auto rows = torch::from_blob(gx + r0 * W * C, {pixels, C}, x.options());
      at::mm_out(rows, lifted, mix);
    }
    if (need_w) {
      auto own = partials[at::get_thread_num()];
      own.addmm_(lifted.t(), torch::from_blob(const_cast<float*>(xs) + r0 * W * C, {pixels, C}, x.options()));
    }
  });
  return {need_x ? grad_x : torch::Tensor(), need_w ? partials.sum(0).view({B, Cout, C}) : torch::Tensor()};
}

// Whether the disk sums of a widths table ((B, K) 2D, (B, K, K) 3D) come from a compile-time table (a default map of
// k = 3, 5, 7, 9) rather than through the box-sum buffer.
bool has_direct_sums(const torch::Tensor& widths) {
  const auto table = check_widths(widths, widths.dim() + 2);
  const int64_t B = widths.size(0), K = widths.size(-1);
  return widths.dim() == 2 ? default_disk_rows(table.data(), B, K) != nullptr
                           : default_ball_rows(table.data(), B, K) != nullptr;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("disk_conv", &disk_conv, "Fused 2D/3D SRE convolution on CPU (disk sums and one product per tile)");
  m.def("disk_conv_backward", &disk_conv_backward, "Its input gradient and disk-mixing gradient");
  m.def("has_direct_sums", &has_direct_sums, "Whether a widths table has compile-time disk sums");
  m.def("product_backend", [] { return onednn_matmul() != nullptr ? "onednn" : "aten"; },
        "Which library takes the large products of inference where the caller allows oneDNN: onednn or aten");
  m.def("disk_mixing", &disk_mixing, "The disk-mixing matrix of band weights (or its input-gradient layout)");
}
