// Copyright (c) monai_sre contributors
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
//
// The fused CPU kernel of a 2D or 3D SRE convolution (stride 1, dilation 1, one group, zero padding of the kernel
// radius), compiled on first use by monai_sre/layers/ring_cpp.py. Why hand-written: no library forms the band sums of a tile
// of pixels and feeds them into one matrix product, which is what the ring decomposition needs on CPU (oneDNN's
// depthwise filters cost one pass over memory per band, see benchmarks/README.md).
//
// The kernel works with disks instead of bands: disk b is the union of bands 0..b, and with V_b = W_b - W_{b+1}
// (V_last = W_last) the convolution is sum_b V_b D_b(x), D_b the sum of x over disk b. A disk of a radially symmetric
// kernel holds, in every kernel row (dz, dy), one centred run of columns |dx| <= w_b(dz, dy) (`widths`, -1 for an
// empty row), so D_b is a sum of horizontal box sums H_w of the input rows: the box sums H_0..H_R of a row cost 2R
// adds per channel and voxel, the disks sum_b (rows of disk b) more; for a 9x9 kernel 8 + 25 = 33 adds instead of
// the 164 taps of the bands' bounding boxes, for a 5^3 kernel 5 * 4 + 31 = 51 instead of 153 (the box sums of an
// input row are formed again for each of the 5 output planes that read it). A task owns a run of output rows of one
// plane at a time: it forms their box sums (with R rows of halo above and below, in the planes around) and disk sums
// in thread-local buffers, multiplies the (voxels, bands * C) disk matrix by the (bands * C, Cout) mixing matrix with
// one ATen product, adds the bias and writes its rows of the output. A 2D input is a 3D one of depth 1.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

// 16 floats, loaded and stored unaligned: the compiler maps it to one AVX-512 or two AVX2 registers.
typedef float vec16 __attribute__((vector_size(64), aligned(4)));
constexpr int64_t kLanes = 16;

// Horizontal box sums of `rows` input rows starting at row `y_first` of each of the `planes` input planes starting
// at plane `z_first` (rows and planes outside the volume are zero):
// hbuf[(plane, row, x, w, c)] = sum_{|dx| <= w} x[z, y, x + dx, c], zero outside the image.
void box_sums(const float* volume, float* hbuf, int64_t z_first, int64_t planes, int64_t y_first, int64_t rows,
              int64_t D, int64_t H, int64_t W, int64_t R, int64_t C) {
  const int64_t h_row = W * (R + 1) * C;
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t z = z_first + p;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t y = y_first + i;
      float* out_row = hbuf + (p * rows + i) * h_row;
      if (z < 0 || z >= D || y < 0 || y >= H) {
        std::fill(out_row, out_row + h_row, 0.f);
        continue;
      }
      const float* in_row = volume + (z * H + y) * W * C;
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
}

// The disks of the default band maps (one-voxel rings, monai_sre.layers.rings.ring_index): kDisks2DK[b][ky] (2D,
// k = 3, 5, 7, 9) and kDisks3DK[b][kz][ky] (3D, k = 3, 5) are the half-widths of disk b in each kernel row. With the
// table known at compile time the disk sums take no branch and no index arithmetic per tap (measured: 2.9 instead of
// 3.7 ms for a 64-channel 32x32 batch of 32, one thread).
constexpr int kDisks2D3[2][1][3] = {{{-1, 0, -1}}, {{1, 1, 1}}};
constexpr int kDisks2D5[3][1][5] = {{{-1, -1, 0, -1, -1}}, {{-1, 1, 1, 1, -1}}, {{1, 2, 2, 2, 1}}};
constexpr int kDisks2D7[4][1][7] = {{{-1, -1, -1, 0, -1, -1, -1}}, {{-1, -1, 1, 1, 1, -1, -1}},
                                    {{-1, 1, 2, 2, 2, 1, -1}}, {{1, 2, 3, 3, 3, 2, 1}}};
constexpr int kDisks2D9[5][1][9] = {{{-1, -1, -1, -1, 0, -1, -1, -1, -1}}, {{-1, -1, -1, 1, 1, 1, -1, -1, -1}},
                                    {{-1, -1, 1, 2, 2, 2, 1, -1, -1}}, {{-1, 1, 2, 3, 3, 3, 2, 1, -1}},
                                    {{2, 3, 4, 4, 4, 4, 4, 3, 2}}};
constexpr int kDisks3D3[2][3][3] = {{{-1, -1, -1}, {-1, 0, -1}, {-1, -1, -1}}, {{0, 1, 0}, {1, 1, 1}, {0, 1, 0}}};
constexpr int kDisks3D5[3][5][5] = {
    {{-1, -1, -1, -1, -1}, {-1, -1, -1, -1, -1}, {-1, -1, 0, -1, -1}, {-1, -1, -1, -1, -1}, {-1, -1, -1, -1, -1}},
    {{-1, -1, -1, -1, -1}, {-1, 0, 1, 0, -1}, {-1, 1, 1, 1, -1}, {-1, 0, 1, 0, -1}, {-1, -1, -1, -1, -1}},
    {{-1, 1, 1, 1, -1}, {1, 2, 2, 2, 1}, {1, 2, 2, 2, 1}, {1, 2, 2, 2, 1}, {-1, 1, 1, 1, -1}}};

template <int KZ, int K>
constexpr int default_width(int b, int kz, int ky) {
  if constexpr (KZ == 1 && K == 3) return kDisks2D3[b][kz][ky];
  if constexpr (KZ == 1 && K == 5) return kDisks2D5[b][kz][ky];
  if constexpr (KZ == 1 && K == 7) return kDisks2D7[b][kz][ky];
  if constexpr (KZ == 1 && K == 9) return kDisks2D9[b][kz][ky];
  if constexpr (KZ == 3) return kDisks3D3[b][kz][ky];
  return kDisks3D5[b][kz][ky];
}

template <int B, int KZ, int K>
bool is_default(const int64_t* widths) {
  for (int b = 0; b < B; ++b)
    for (int kz = 0; kz < KZ; ++kz)
      for (int ky = 0; ky < K; ++ky)
        if (widths[(b * KZ + kz) * K + ky] != default_width<KZ, K>(b, kz, ky)) return false;
  return true;
}

// Disk sums of `rows` output rows of one plane for one of the default maps, from their box sums (hbuf holds KZ
// planes of rows + K - 1 rows, starting R rows above the first output row):
// dbuf[(row, x, b, c)] = sum_{kz, ky} H_{w(b, kz, ky)}[kz, row + ky, x, c]. Channel blocks of 16 are summed in
// registers; the remaining channels one by one.
template <int B, int KZ, int K>
void disk_sums(const float* hbuf, float* dbuf, int64_t rows, int64_t W, int64_t C) {
  constexpr int64_t R = (K - 1) / 2;
  const int64_t h_row = W * (R + 1) * C;
  const int64_t h_plane = (rows + K - 1) * h_row;
  const int64_t vector_channels = C / kLanes * kLanes;
  for (int64_t y = 0; y < rows; ++y) {
    for (int64_t x = 0; x < W; ++x) {
      const float* h = hbuf + y * h_row + x * (R + 1) * C;
      float* d = dbuf + (y * W + x) * B * C;
      for (int64_t c = 0; c < vector_channels; c += kLanes) {
        vec16 acc[B];
        for (int b = 0; b < B; ++b) acc[b] = vec16{};
#pragma GCC unroll 8
        for (int kz = 0; kz < KZ; ++kz) {
#pragma GCC unroll 16
          for (int ky = 0; ky < K; ++ky) {
            const float* hk = h + kz * h_plane + ky * h_row + c;
#pragma GCC unroll 8
            for (int b = 0; b < B; ++b) {
              if (default_width<KZ, K>(b, kz, ky) >= 0)
                acc[b] += *reinterpret_cast<const vec16*>(hk + default_width<KZ, K>(b, kz, ky) * C);
            }
          }
        }
        for (int b = 0; b < B; ++b) *reinterpret_cast<vec16*>(d + b * C + c) = acc[b];
      }
      for (int64_t c = vector_channels; c < C; ++c) {
        for (int b = 0; b < B; ++b) {
          float acc = 0.f;
          for (int kz = 0; kz < KZ; ++kz)
            for (int ky = 0; ky < K; ++ky)
              if (default_width<KZ, K>(b, kz, ky) >= 0)
                acc += h[kz * h_plane + ky * h_row + default_width<KZ, K>(b, kz, ky) * C + c];
          d[b * C + c] = acc;
        }
      }
    }
  }
}

// The same for any band map (other ring counts, other kernel sizes), from the runtime table.
void disk_sums_any(const int64_t* widths, const float* hbuf, float* dbuf, int64_t rows, int64_t W, int64_t C,
                   int64_t B, int64_t KZ, int64_t K) {
  const int64_t R = (K - 1) / 2;
  const int64_t h_row = W * (R + 1) * C;
  const int64_t h_plane = (rows + K - 1) * h_row;
  for (int64_t y = 0; y < rows; ++y) {
    for (int64_t x = 0; x < W; ++x) {
      const float* h = hbuf + y * h_row + x * (R + 1) * C;
      float* __restrict__ d = dbuf + (y * W + x) * B * C;
      std::fill(d, d + B * C, 0.f);
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t kz = 0; kz < KZ; ++kz) {
          for (int64_t ky = 0; ky < K; ++ky) {
            const int64_t w = widths[(b * KZ + kz) * K + ky];
            if (w < 0) continue;
            const float* __restrict__ src = h + kz * h_plane + ky * h_row + w * C;
            float* __restrict__ dst = d + b * C;
            for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
          }
        }
      }
    }
  }
}

void disk_sums_dispatch(const int64_t* widths, const float* hbuf, float* dbuf, int64_t rows, int64_t W, int64_t C,
                        int64_t B, int64_t KZ, int64_t K) {
  if (KZ == 1 && B == 2 && K == 3 && is_default<2, 1, 3>(widths)) return disk_sums<2, 1, 3>(hbuf, dbuf, rows, W, C);
  if (KZ == 1 && B == 3 && K == 5 && is_default<3, 1, 5>(widths)) return disk_sums<3, 1, 5>(hbuf, dbuf, rows, W, C);
  if (KZ == 1 && B == 4 && K == 7 && is_default<4, 1, 7>(widths)) return disk_sums<4, 1, 7>(hbuf, dbuf, rows, W, C);
  if (KZ == 1 && B == 5 && K == 9 && is_default<5, 1, 9>(widths)) return disk_sums<5, 1, 9>(hbuf, dbuf, rows, W, C);
  if (KZ == 3 && B == 2 && K == 3 && is_default<2, 3, 3>(widths)) return disk_sums<2, 3, 3>(hbuf, dbuf, rows, W, C);
  if (KZ == 5 && B == 3 && K == 5 && is_default<3, 5, 5>(widths)) return disk_sums<3, 5, 5>(hbuf, dbuf, rows, W, C);
  disk_sums_any(widths, hbuf, dbuf, rows, W, C, B, KZ, K);
}

}  // namespace

// x: (N, C, H, W) or (N, C, D, H, W) float32 on CPU, stored channels-last. widths: (B, KZ, K) int64, the half-width of
// disk b in kernel row (kz, ky) (-1: no taps), K = 2R + 1 odd, KZ = 1 in 2D and K in 3D. mixing: (B * C, Cout)
// float32, row b * C + c = V_b[:, c]. bias: (Cout,) or an empty tensor. tile_pixels: about how many output voxels one
// product covers. Returns the output of x's rank with Cout channels, stored channels-last (a tensor of its own).
torch::Tensor disk_conv(const torch::Tensor& x, const torch::Tensor& widths, const torch::Tensor& mixing,
                        const torch::Tensor& bias, int64_t tile_pixels) {
  const bool volumetric = x.dim() == 5;
  const auto memory = volumetric ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::ChannelsLast;
  TORCH_CHECK((x.dim() == 4 || x.dim() == 5) && x.scalar_type() == torch::kFloat && x.device().is_cpu() &&
                  x.is_contiguous(memory),
              "disk_conv: x must be a channels-last float32 CPU tensor (N, C, [D,] H, W), got ", x.sizes());
  TORCH_CHECK(widths.dim() == 3 && widths.scalar_type() == torch::kLong && widths.size(2) % 2 == 1 &&
                  widths.size(1) == (volumetric ? widths.size(2) : 1),
              "disk_conv: widths must be int64 (bands, 1 or the kernel size, odd kernel size), got ", widths.sizes());
  const int64_t N = x.size(0), C = x.size(1), D = volumetric ? x.size(2) : 1, H = x.size(-2), W = x.size(-1);
  const int64_t B = widths.size(0), KZ = widths.size(1), K = widths.size(2), R = (K - 1) / 2, RZ = (KZ - 1) / 2;
  TORCH_CHECK(mixing.dim() == 2 && mixing.size(0) == B * C && mixing.scalar_type() == torch::kFloat,
              "disk_conv: mixing must be float32 (bands * C = ", B * C, ", Cout), got ", mixing.sizes());
  const int64_t Cout = mixing.size(1);
  TORCH_CHECK(!bias.defined() || bias.numel() == 0 || bias.numel() == Cout, "disk_conv: bias must have ", Cout,
              " elements, got ", bias.numel());
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes[1] = Cout;
  auto out = torch::empty(sizes, x.options().memory_format(memory));
  if (out.numel() == 0) return out;
  const auto mix = mixing.contiguous();
  const auto shift = (bias.defined() && bias.numel() > 0) ? bias.contiguous() : torch::Tensor();
  const auto table_tensor = widths.contiguous();
  const std::vector<int64_t> table(table_tensor.data_ptr<int64_t>(), table_tensor.data_ptr<int64_t>() + B * KZ * K);
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float* shift_ptr = shift.defined() ? shift.data_ptr<float>() : nullptr;
  const int64_t total_rows = N * D * H;  // output rows (n, z, y), each of W voxels
  const int64_t group = std::max<int64_t>(1, std::min<int64_t>(total_rows, tile_pixels / std::max<int64_t>(W, 1)));
  const int64_t tasks = (total_rows + group - 1) / group;
  at::parallel_for(0, tasks, 1, [&](int64_t first, int64_t last) {
    const int64_t segment_rows = std::min(group, H);
    std::vector<float> hbuf(KZ * (segment_rows + 2 * R) * W * (R + 1) * C);
    std::vector<float> dbuf(group * W * B * C);
    for (int64_t task = first; task < last; ++task) {
      const int64_t r0 = task * group, r1 = std::min(total_rows, r0 + group);
      for (int64_t r = r0; r < r1;) {  // the task's rows of one plane at a time
        const int64_t plane = r / H, y0 = r % H, y1 = std::min(H, y0 + (r1 - r));
        const int64_t n = plane / D, z = plane % D;
        box_sums(src + n * D * H * W * C, hbuf.data(), z - RZ, KZ, y0 - R, y1 - y0 + 2 * R, D, H, W, R, C);
        disk_sums_dispatch(table.data(), hbuf.data(), dbuf.data() + (r - r0) * W * B * C, y1 - y0, W, C, B, KZ, K);
        r += y1 - y0;
      }
      const int64_t voxels = (r1 - r0) * W;
      auto sums = torch::from_blob(dbuf.data(), {voxels, B * C}, x.options());
      auto rows = torch::from_blob(dst + r0 * W * Cout, {voxels, Cout}, x.options());
      at::mm_out(rows, sums, mix);
      if (shift_ptr != nullptr) {
        float* o = dst + r0 * W * Cout;
        for (int64_t v = 0; v < voxels; ++v)
          for (int64_t c = 0; c < Cout; ++c) o[v * Cout + c] += shift_ptr[c];
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("disk_conv", &disk_conv, "Fused 2D/3D SRE convolution on CPU (disk sums and one product per tile)");
}
