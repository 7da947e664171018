// The evaluation resize + centre crop of crossformer_deploy.base.images.resize_and_crop, bit for bit:
// Pillow's BICUBIC resampling (Resample.c: a convolution whose support widens with the scale, so it
// anti-aliases when shrinking; 22-bit fixed-point weights; two passes with an 8-bit image in between),
// torchvision's target-size arithmetic and Python's round-half-to-even for the crop offsets.
//
// OpenVINO's PrePostProcessor resize is not used for this: RESIZE_CUBIC is a different filter (pixels off
// by up to 12 levels), and even RESIZE_BICUBIC_PILLOW on u8 differs from Pillow by one level on a few
// pixels, needs a graph per source image size and cannot batch images of different sizes
// (examples/cpp/README.md has the numbers).
#pragma once

#include "image_io.h"

namespace cf {

// Pillow's Image.resize((width, height), Image.BICUBIC) of an RGB image.
RgbImage resize_bicubic(RgbImage const& im, int width, int height);

// Image.crop((left, top, left + width, top + height)), the box inside the image.
RgbImage crop(RgbImage const& im, int left, int top, int width, int height);

// resize_and_crop(im, (height, width), crop_ratio): a square target resizes the shorter side to
// int(size / crop_ratio) (torchvision's Resize(int)); any other covers (height, width) / crop_ratio
// keeping the aspect ratio; then the centre crop.
RgbImage resize_and_crop(RgbImage const& im, int height, int width, double crop_ratio);

}  // namespace cf
