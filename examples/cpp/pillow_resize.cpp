// Pillow's BICUBIC resize for 8-bit RGB, re-derived from the arithmetic of Pillow 13's
// src/libImaging/Resample.c (the types and the order of operations are what make it bit-exact, so they
// are kept: float box edges, double weights, int32 accumulators, the 8-bit image between the passes).
// Compiled with -ffp-contract=off (CMakeLists.txt): a fused multiply-add would round differently.
#include "pillow_resize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace cf {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // fixed-point weights: 22 fractional bits, sums fit an int32
constexpr double kSupport = 2.0;            // bicubic reaches two source pixels each way at scale 1

double bicubic(double x) {  // Keys' cubic with a = -0.5
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For each output pixel along one axis: the first source pixel and how many contribute, and their
// weights as 22-bit fixed point (precompute_coeffs + normalize_coeffs_8bpc).
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // out_size rows of ksize
};

Taps precompute(int in_size, float in0, float in1, int out_size) {
  Taps t;
  double const scale = static_cast<double>(in1 - in0) / out_size;
  double const filterscale = std::max(scale, 1.0);  // widen the filter when shrinking: anti-aliasing
  double const support = kSupport * filterscale;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<size_t>(out_size) * t.ksize, 0);
  std::vector<double> k(t.ksize);
  double const inv_filterscale = 1.0 / filterscale;
  for (int xx = 0; xx < out_size; ++xx) {
    double const center = in0 + (xx + 0.5) * scale;
    int xmin = static_cast<int>(center - support + 0.5);  // truncation toward zero, as in C
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      double const w = bicubic((x + xmin - center + 0.5) * inv_filterscale);
      k[x] = w;
      ww += w;
    }
    if (ww != 0.0)
      for (int x = 0; x < xmax; ++x) k[x] /= ww;
    for (int x = 0; x < xmax; ++x)
      t.weights[static_cast<size_t>(xx) * t.ksize + x] =
          static_cast<int32_t>(k[x] < 0 ? -0.5 + k[x] * (1 << kPrecisionBits) : 0.5 + k[x] * (1 << kPrecisionBits));
    t.first[xx] = xmin;
    t.count[xx] = xmax;
  }
  return t;
}

uint8_t clip8(int32_t sum) { return static_cast<uint8_t>(std::clamp(sum >> kPrecisionBits, 0, 255)); }

// One pass along x: rows [row0, row0 + out_rows) of `in` -> out (width taps.first.size()).
RgbImage pass_horizontal(RgbImage const& in, Taps const& taps, int row0, int out_rows) {
  int const out_w = static_cast<int>(taps.first.size());
  RgbImage out{out_w, out_rows, std::vector<uint8_t>(static_cast<size_t>(out_w) * out_rows * 3)};
  for (int y = 0; y < out_rows; ++y) {
    uint8_t const* line = &in.pixels[static_cast<size_t>(y + row0) * in.width * 3];
    uint8_t* dst = &out.pixels[static_cast<size_t>(y) * out_w * 3];
    for (int xx = 0; xx < out_w; ++xx) {
      int32_t const* k = &taps.weights[static_cast<size_t>(xx) * taps.ksize];
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;  // +0.5: round to nearest
      uint8_t const* src = line + static_cast<size_t>(taps.first[xx]) * 3;
      for (int x = 0; x < taps.count[xx]; ++x) {
        s0 += src[3 * x] * k[x];
        s1 += src[3 * x + 1] * k[x];
        s2 += src[3 * x + 2] * k[x];
      }
      dst[3 * xx] = clip8(s0);
      dst[3 * xx + 1] = clip8(s1);
      dst[3 * xx + 2] = clip8(s2);
    }
  }
  return out;
}

// One pass along y; taps.first is relative to the first row of `in`.
RgbImage pass_vertical(RgbImage const& in, Taps const& taps) {
  int const out_h = static_cast<int>(taps.first.size()), w = in.width;
  RgbImage out{w, out_h, std::vector<uint8_t>(static_cast<size_t>(w) * out_h * 3)};
  for (int yy = 0; yy < out_h; ++yy) {
    int32_t const* k = &taps.weights[static_cast<size_t>(yy) * taps.ksize];
    uint8_t const* top = &in.pixels[static_cast<size_t>(taps.first[yy]) * w * 3];
    uint8_t* dst = &out.pixels[static_cast<size_t>(yy) * w * 3];
    for (int i = 0; i < w * 3; ++i) {
      int32_t s = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < taps.count[yy]; ++y) s += top[static_cast<size_t>(y) * w * 3 + i] * k[y];
      dst[i] = clip8(s);
    }
  }
  return out;
}

}  // namespace

RgbImage resize_bicubic(RgbImage const& im, int width, int height) {
  if (width == im.width && height == im.height) return im;  // Image.resize returns a copy
  // ImagingResampleInner with box (0, 0, width, height) of the source
  bool const need_h = width != im.width, need_v = height != im.height;
  // Pillow 13 runs the vertical pass first when the height shrinks more than twice as much as the width
  // (a faster order, and, with the 8-bit image between the passes, a different result): follow it.
  int const dy = im.height - height, dx = im.width - width;
  bool const horizontal_first = !(dy > 0 && dy > dx * 2);
  auto const box_w = static_cast<float>(im.width), box_h = static_cast<float>(im.height);
  if (horizontal_first) {
    Taps vert = precompute(im.height, 0.0f, box_h, height);
    RgbImage tmp;
    RgbImage const* src = &im;
    if (need_h) {
      // only the source rows the vertical pass will read are resampled horizontally
      int const first = vert.first.front(), last = vert.first.back() + vert.count.back();
      for (int& f : vert.first) f -= first;
      tmp = pass_horizontal(im, precompute(im.width, 0.0f, box_w, width), first, last - first);
      src = &tmp;
    }
    return need_v ? pass_vertical(*src, vert) : tmp;
  }
  RgbImage tmp = pass_vertical(im, precompute(im.height, 0.0f, box_h, height));  // need_v holds here
  return need_h ? pass_horizontal(tmp, precompute(im.width, 0.0f, box_w, width), 0, height) : tmp;
}

RgbImage crop(RgbImage const& im, int left, int top, int width, int height) {
  if (left < 0 || top < 0 || left + width > im.width || top + height > im.height)
    throw std::logic_error("crop box outside the image");
  RgbImage out{width, height, std::vector<uint8_t>(static_cast<size_t>(width) * height * 3)};
  for (int y = 0; y < height; ++y)
    std::memcpy(&out.pixels[static_cast<size_t>(y) * width * 3],
                &im.pixels[(static_cast<size_t>(y + top) * im.width + left) * 3], static_cast<size_t>(width) * 3);
  return out;
}

RgbImage resize_and_crop(RgbImage const& im, int height, int width, double crop_ratio) {
  int const w = im.width, h = im.height;
  int nw = 0, nh = 0;
  // std::nearbyint in the default rounding mode is Python's round(): halves to even
  if (height == width) {
    int const shorter = static_cast<int>(height / crop_ratio);
    if (w <= h) {
      nw = shorter;
      nh = static_cast<int>(static_cast<double>(static_cast<int64_t>(shorter) * h) / w);
    } else {
      nw = static_cast<int>(static_cast<double>(static_cast<int64_t>(shorter) * w) / h);
      nh = shorter;
    }
  } else {
    double const s = std::max(height / crop_ratio / h, width / crop_ratio / w);
    nw = std::max(width, static_cast<int>(std::nearbyint(w * s)));
    nh = std::max(height, static_cast<int>(std::nearbyint(h * s)));
  }
  RgbImage const resized = resize_bicubic(im, nw, nh);
  int const top = static_cast<int>(std::nearbyint((nh - height) / 2.0));
  int const left = static_cast<int>(std::nearbyint((nw - width) / 2.0));
  return crop(resized, left, top, width, height);
}

}  // namespace cf
