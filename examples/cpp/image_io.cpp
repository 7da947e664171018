// JPEG / PNG decoding to what crossformer_deploy's load_image() hands its preprocessing (see image_io.h).
//
// Each rule below names the Pillow behaviour it reproduces (Pillow 13: JpegImagePlugin, PngImagePlugin,
// Image.getexif, ImageOps.exif_transpose, Paste.c) and preprocess.to_rgb(). libjpeg and libpng report
// errors by longjmp, so the functions that call setjmp keep only trivially destructible locals and
// write everything else into a struct their caller owns: a longjmp must not skip a C++ destructor.
#include "image_io.h"

#include <cstdio>  // before jpeglib.h, which uses FILE and size_t without including anything
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>

namespace cf {
namespace {

// Pillow refuses images above twice Image.MAX_IMAGE_PIXELS (DecompressionBombError) before decoding.
constexpr uint64_t kMaxPixels = 2ull * 89478485ull;

std::vector<uint8_t> read_bytes(std::string const& path) {
  // The same few words as crossformer_deploy.base.errors.os_reason, so both hosts say the same thing.
  std::error_code ec;
  auto const status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) throw ImageError("no such file: " + path);
  if (std::filesystem::is_directory(status)) throw ImageError("it is a directory, not a file: " + path);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw ImageError(std::string(errno == EACCES ? "permission denied" : std::strerror(errno)) + ": " + path);
  std::vector<uint8_t> data;
  uint8_t chunk[1 << 16];
  for (size_t n; (n = std::fread(chunk, 1, sizeof chunk, f)) > 0;) data.insert(data.end(), chunk, chunk + n);
  bool const failed = std::ferror(f);
  std::fclose(f);
  if (failed) throw ImageError("cannot read " + path);
  return data;
}

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

// ---- orientation (Image.getexif + ImageOps.exif_transpose) --------------------------------------------

// The Orientation tag (0x0112) of IFD0 in TIFF-structured EXIF bytes; nullopt when absent or unreadable.
std::optional<int> exif_orientation(std::string_view tiff) {
  if (tiff.size() < 8) return std::nullopt;
  bool const little = starts_with(tiff, "II");
  if (!little && !starts_with(tiff, "MM")) return std::nullopt;
  auto u16 = [&](size_t at) -> uint32_t {
    auto const a = static_cast<uint8_t>(tiff[at]), b = static_cast<uint8_t>(tiff[at + 1]);
    return little ? a | b << 8 : a << 8 | b;
  };
  auto u32 = [&](size_t at) -> uint32_t { return little ? u16(at) | u16(at + 2) << 16 : u16(at) << 16 | u16(at + 2); };
  if (u16(2) != 42) return std::nullopt;
  size_t const ifd = u32(4);
  if (ifd + 2 > tiff.size()) return std::nullopt;
  for (size_t i = 0, n = u16(ifd); i < n; ++i) {
    size_t const entry = ifd + 2 + 12 * i;
    if (entry + 12 > tiff.size()) break;
    if (u16(entry) != 0x0112) continue;
    switch (u16(entry + 2)) {  // the tag's type: SHORT as the standard says, LONG and BYTE seen in the wild
      case 3: return static_cast<int>(u16(entry + 8));
      case 4: return static_cast<int>(u32(entry + 8));
      case 1: return static_cast<int>(static_cast<uint8_t>(tiff[entry + 8]));
      default: return std::nullopt;
    }
  }
  return std::nullopt;
}

// Pillow's fallback when EXIF has no Orientation: the first match of tiff:Orientation(="|>)([0-9]) in XMP.
std::optional<int> xmp_orientation(std::string_view xmp) {
  constexpr std::string_view key = "tiff:Orientation";
  for (size_t at = xmp.find(key); at != std::string_view::npos; at = xmp.find(key, at + 1)) {
    std::string_view rest = xmp.substr(at + key.size());
    size_t skip = starts_with(rest, "=\"") ? 2 : starts_with(rest, ">") ? 1 : 0;
    if (skip && rest.size() > skip && rest[skip] >= '0' && rest[skip] <= '9') return rest[skip] - '0';
  }
  return std::nullopt;
}

int orientation(std::string_view exif, std::string_view xmp) {
  if (auto o = exif_orientation(exif)) return *o;
  return xmp_orientation(xmp).value_or(1);
}

// exif_transpose(): orientation 2..8 -> FLIP_LEFT_RIGHT, ROTATE_180, FLIP_TOP_BOTTOM, TRANSPOSE,
// ROTATE_270, TRANSVERSE, ROTATE_90; any other value leaves the image as it is.
RgbImage apply_orientation(RgbImage im, int code) {
  if (code < 2 || code > 8) return im;
  int const w = im.width, h = im.height;
  bool const swap = code >= 5;  // the transposing ones
  RgbImage out{swap ? h : w, swap ? w : h, std::vector<uint8_t>(im.pixels.size())};
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;  // the source pixel shown at (x, y)
      switch (code) {
        case 2: sx = w - 1 - x; break;
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;
        case 4: sy = h - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = h - 1 - x; break;           // turn clockwise
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;
        case 8: sx = w - 1 - y; sy = x; break;           // turn counter-clockwise
      }
      std::memcpy(&out.pixels[(static_cast<size_t>(y) * out.width + x) * 3],
                  &im.pixels[(static_cast<size_t>(sy) * w + sx) * 3], 3);
    }
  }
  return out;
}

// Pillow's paste(rgba, mask=alpha) onto white, per channel: DIV255(255 * (255 - a) + c * a), rounded as
// Paste.c's BLEND macro rounds.
uint8_t over_white(uint32_t c, uint32_t a) {
  uint32_t const t = 255 * (255 - a) + c * a + 128;
  return static_cast<uint8_t>(((t >> 8) + t) >> 8);
}

// ---- JPEG ---------------------------------------------------------------------------------------------

struct JpegErrors {
  jpeg_error_mgr mgr;  // first: libjpeg hands back a pointer to it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_fail(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  cinfo->err->format_message(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// libjpeg decodes a truncated file by padding it with grey and a warning; Pillow refuses a truncated
// file, so that warning is an error here. Other warnings (extraneous bytes before a marker...) pass
// silently, as in Pillow; trace messages are dropped.
void jpeg_message(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(cinfo);
}

struct JpegResult {
  RgbImage image;
  std::string exif;  // TIFF bytes: APP1 "Exif\0\0" segments, later ones appended as Pillow does
  std::string xmp;   // the last APP1 XMP packet
  int components = 0;
  bool too_large = false;
  char error[JMSG_LENGTH_MAX] = {};
};

bool decode_jpeg(std::vector<uint8_t> const& data, JpegResult& out) {
  jpeg_decompress_struct cinfo{};
  JpegErrors errors{};
  cinfo.err = jpeg_std_error(&errors.mgr);
  errors.mgr.error_exit = jpeg_fail;
  errors.mgr.emit_message = jpeg_message;
  if (setjmp(errors.jump)) {
    std::memcpy(out.error, errors.message, sizeof out.error);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data.data(), static_cast<unsigned long>(data.size()));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
    std::string_view const seg(reinterpret_cast<char const*>(m->data), m->data_length);
    if (starts_with(seg, std::string_view("Exif\0\0", 6))) {
      out.exif.append(seg.substr(6));
    } else if (starts_with(seg, std::string_view("http://ns.adobe.com/xap/1.0/\0", 29))) {
      out.xmp.assign(seg.substr(29));
    }
  }
  out.components = cinfo.num_components;
  out.too_large = static_cast<uint64_t>(cinfo.image_width) * cinfo.image_height > kMaxPixels;
  if ((out.components != 1 && out.components != 3) || out.too_large) {
    jpeg_destroy_decompress(&cinfo);
    return true;  // the caller says what is wrong
  }
  // Pillow decodes with libjpeg's defaults too (islow IDCT, fancy upsampling) into RGB(X); a gray JPEG
  // comes out replicated, as Pillow's convert("RGB") of an "L" image does.
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  out.image.width = static_cast<int>(cinfo.output_width);
  out.image.height = static_cast<int>(cinfo.output_height);
  out.image.pixels.resize(static_cast<size_t>(cinfo.output_width) * cinfo.output_height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.image.pixels.data() + static_cast<size_t>(cinfo.output_scanline) * cinfo.output_width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

RgbImage load_jpeg(std::vector<uint8_t> const& data, std::string const& path) {
  JpegResult r;
  if (!decode_jpeg(data, r)) throw ImageError("corrupt image " + path + ": " + r.error);
  if (r.too_large) throw ImageError("image too large: " + path);
  if (r.components == 4) throw ImageError("CMYK JPEG images are not supported by this host: " + path);
  if (r.components != 1 && r.components != 3)
    throw ImageError("unsupported JPEG (" + std::to_string(r.components) + " components): " + path);
  return apply_orientation(std::move(r.image), orientation(r.exif, r.xmp));
}

// ---- PNG ----------------------------------------------------------------------------------------------

struct PngSource {
  std::vector<uint8_t> const* data;
  size_t pos;
};

void png_read_bytes(png_structp png, png_bytep out, png_size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (src->data->size() - src->pos < n) png_error(png, "image file is truncated");
  std::memcpy(out, src->data->data() + src->pos, n);
  src->pos += n;
}

[[noreturn]] void png_fail(png_structp png, png_const_charp message) {
  std::snprintf(static_cast<char*>(png_get_error_ptr(png)), 256, "%s", message);
  png_longjmp(png, 1);
}

void png_warn(png_structp, png_const_charp) {}  // e.g. "iCCP: known incorrect sRGB profile": not an error

struct PngResult {
  int width = 0, height = 0, channels = 0;
  bool gray16 = false;  // 16-bit grayscale: kept at 16 bits, to_rgb() rescales it
  std::vector<uint8_t> raw;
  std::vector<png_bytep> rows;
  std::string exif, xmp;
  bool too_large = false;
  char error[256] = {};
};

bool decode_png(std::vector<uint8_t> const& data, PngResult& out) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, out.error, png_fail, png_warn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(out.error, sizeof out.error, "out of memory");
    return false;
  }
  PngSource source{&data, 0};
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &source, png_read_bytes);
  // Pillow checks every chunk's CRC and refuses a broken file; libpng by default only warns on an
  // ancillary chunk's.
  png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
  png_read_info(png, info);
  png_uint_32 width = 0, height = 0;
  int depth = 0, color = 0;
  png_get_IHDR(png, info, &width, &height, &depth, &color, nullptr, nullptr, nullptr);
  out.too_large = static_cast<uint64_t>(width) * height > kMaxPixels;
  if (out.too_large) {
    png_destroy_read_struct(&png, &info, nullptr);
    return true;
  }
  // Pillow's modes: a palette image is "P", taken to RGBA by to_rgb() only when it has a tRNS chunk; a
  // tRNS chunk on a gray or RGB image is ignored there (mode stays "L" / "RGB"), so libpng is asked to
  // turn tRNS into alpha for palettes only. 1/2/4-bit gray expands to 0..255 as Pillow's unpackers do.
  if (color == PNG_COLOR_TYPE_PALETTE) {
    png_set_palette_to_rgb(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  }
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  out.gray16 = color == PNG_COLOR_TYPE_GRAY && depth == 16;
  // 16-bit RGB, RGBA and gray+alpha: Pillow's "RGB;16B"-style unpackers keep the high byte (no rounding)
  if (depth == 16 && !out.gray16) png_set_strip_16(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  out.channels = png_get_channels(png, info);
  size_t const stride = png_get_rowbytes(png, info);
  out.raw.resize(stride * height);
  out.rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) out.rows[y] = out.raw.data() + y * stride;
  png_read_image(png, out.rows.data());
  png_read_end(png, info);  // eXIf and iTXt may follow the image data; Pillow reads them there too
  png_uint_32 exif_size = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(png, info, &exif_size, &exif)) out.exif.assign(reinterpret_cast<char*>(exif), exif_size);
  png_textp text = nullptr;
  int n_text = 0;
  if (png_get_text(png, info, &text, &n_text)) {
    for (int i = 0; i < n_text; ++i) {
      if (std::strcmp(text[i].key, "XML:com.adobe.xmp") == 0 && text[i].text) {
        out.xmp.assign(text[i].text, text[i].compression >= PNG_ITXT_COMPRESSION_NONE ? text[i].itxt_length
                                                                                       : text[i].text_length);
      }
    }
  }
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

RgbImage load_png(std::vector<uint8_t> const& data, std::string const& path) {
  PngResult r;
  if (!decode_png(data, r)) throw ImageError("corrupt image " + path + ": " + r.error);
  if (r.too_large) throw ImageError("image too large: " + path);
  size_t const n = static_cast<size_t>(r.width) * r.height;
  RgbImage im{r.width, r.height, std::vector<uint8_t>(n * 3)};
  uint8_t* out = im.pixels.data();
  uint8_t const* in = r.raw.data();  // rows are packed: every format here has whole-byte pixels
  if (r.gray16) {
    // to_rgb(): a / top * 255 + 0.5, clipped, truncated; top is 65535 if any value exceeds 255, else 255
    uint32_t biggest = 0;
    for (size_t i = 0; i < n; ++i) biggest = std::max<uint32_t>(biggest, in[2 * i] << 8 | in[2 * i + 1]);
    double const top = biggest > 255 ? 65535.0 : 255.0;
    for (size_t i = 0; i < n; ++i) {
      double const v = static_cast<double>(in[2 * i] << 8 | in[2 * i + 1]) / top * 255.0 + 0.5;
      out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
    }
  } else if (r.channels == 1) {
    for (size_t i = 0; i < n; ++i) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = in[i];
  } else if (r.channels == 2) {  // gray + alpha: "LA" -> RGBA -> over white
    for (size_t i = 0; i < n; ++i) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = over_white(in[2 * i], in[2 * i + 1]);
  } else if (r.channels == 3) {
    std::memcpy(out, in, n * 3);
  } else {  // RGBA (also a palette with tRNS): over white
    for (size_t i = 0; i < n; ++i)
      for (int c = 0; c < 3; ++c) out[3 * i + c] = over_white(in[4 * i + c], in[4 * i + 3]);
  }
  return apply_orientation(std::move(im), orientation(r.exif, r.xmp));
}

}  // namespace

RgbImage load_image(std::string const& path) {
  std::vector<uint8_t> const data = read_bytes(path);
  static constexpr uint8_t kJpeg[] = {0xFF, 0xD8, 0xFF};
  static constexpr uint8_t kPng[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (data.size() >= sizeof kJpeg && std::equal(std::begin(kJpeg), std::end(kJpeg), data.begin()))
    return load_jpeg(data, path);
  if (data.size() >= sizeof kPng && std::equal(std::begin(kPng), std::end(kPng), data.begin()))
    return load_png(data, path);
  throw ImageError("not an image (or a format this host cannot read: JPEG and PNG only): " + path);
}

}  // namespace cf
