// Image decoding for classify_openvino: JPEG (libjpeg) and PNG (libpng) to 8-bit RGB, the way
// crossformer_deploy.base.images.load_image does it with Pillow, so that both hosts start from the
// same pixels: EXIF (or XMP) orientation applied; grayscale replicated to RGB; palette expanded;
// transparency composited over white with Pillow's rounding; 16-bit grayscale rescaled as to_rgb() does.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace cf {

// Interleaved 8-bit RGB, rows top to bottom (the memory of Pillow's "RGB" mode, less its pad byte).
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // height * width * 3
};

// A file that is missing, unreadable, not a JPEG/PNG, corrupt, truncated or too large.
struct ImageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Decodes `path` (the format is told by its first bytes, not its name). Throws ImageError with a
// one-line message naming the file.
RgbImage load_image(std::string const& path);

}  // namespace cf
