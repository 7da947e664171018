// classify_openvino: classify images with an exported CrossFormer on OpenVINO, no Python at run time.
//
//   classify_openvino MODEL IMAGE... [--size N|HxW] [--labels labels.txt] [--topk K] [--json]
//   classify_openvino MODEL --raw INPUT.raw [--size N|HxW] ...
//
// MODEL is what crossformer-export wrote (.onnx), or that model saved as OpenVINO IR (.xml + .bin). What
// the model says about itself in its metadata (input_size, stride, dynamic, batch, mean, std, crop_ratio,
// num_classes, max_size; ONNX metadata_props, which OpenVINO puts in the model's rt_info under
// "framework") drives everything, as in crossformer-infer: nothing is hard-coded for one model.
//
// Images (JPEG, PNG) are decoded and resized + centre-cropped here exactly as the Python preprocessing
// does it (image_io.cpp, pillow_resize.cpp: the same 8-bit pixels as Pillow); OpenVINO's
// PrePostProcessor, compiled into the model, does the rest: u8 NHWC -> f32, / 255, - mean, / std,
// -> NCHW. All images go in one batch (a fixed-batch graph: batches of its size, the last one padded).
// --raw takes an already preprocessed float32 NCHW tensor instead (make_input.py writes one).
#include <openvino/frontend/manager.hpp>
#include <openvino/openvino.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "image_io.h"
#include "pillow_resize.h"

namespace {

constexpr char kProg[] = "classify_openvino";
constexpr char kUsage[] =
    "usage: classify_openvino MODEL IMAGE... [--size N|HxW] [--labels FILE] [--topk K] [--json]\n"
    "                         [--threads N] [--precision f32|bf16] [--device CPU] [--repeat N]\n"
    "                         [--dump-pixels FILE]\n"
    "       classify_openvino MODEL --raw INPUT.raw [--size N|HxW] [...]\n"
    "MODEL: .onnx from crossformer-export, or OpenVINO IR (.xml). Images: JPEG, PNG (one batch).\n"
    "--json: top-k and the logits per image. --repeat N: time N more inferences, one line on stderr.\n"
    "--raw: float32 NCHW, already preprocessed (examples/cpp/make_input.py). --dump-pixels: write the\n"
    "resized, cropped uint8 NHWC batch (what the model's preprocessing starts from).\n";

// A user error: one line on stderr, exit code 2 (crossformer-infer's convention).
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Size {
  int height = 0, width = 0;
  std::string str() const { return std::to_string(height) + "x" + std::to_string(width); }
  bool operator==(Size const& o) const { return height == o.height && width == o.width; }
};

struct Options {
  std::string model, raw, labels, dump_pixels, device = "CPU", precision = "f32", size_text;
  std::vector<std::string> images;
  int topk = 5, threads = 0, repeat = 0;
  bool json = false;
};

int positive(std::string_view text, std::string const& what) {
  int v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v <= 0)
    throw Error(what + " must be a positive integer, got '" + std::string(text) + "'");
  return v;
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string const arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--size") o.size_text = value();
    else if (arg == "--labels") o.labels = value();
    else if (arg == "--topk") o.topk = positive(value(), "--topk");
    else if (arg == "--json") o.json = true;
    else if (arg == "--raw") o.raw = value();
    else if (arg == "--threads") o.threads = positive(value(), "--threads");
    else if (arg == "--precision") o.precision = value();
    else if (arg == "--device") o.device = value();
    else if (arg == "--repeat") o.repeat = positive(value(), "--repeat");
    else if (arg == "--dump-pixels") o.dump_pixels = value();
    else if (arg.size() > 1 && arg[0] == '-') throw Error("unknown argument " + arg);
    else positional.push_back(arg);
  }
  if (positional.empty()) throw Error("no model given");
  o.model = positional.front();
  o.images.assign(positional.begin() + 1, positional.end());
  if (o.raw.empty() == o.images.empty()) throw Error("give images, or --raw INPUT.raw, not both (nor neither)");
  if (!o.raw.empty() && !o.dump_pixels.empty()) throw Error("--dump-pixels needs images, not --raw");
  if (o.precision != "f32" && o.precision != "bf16") throw Error("--precision is f32 or bf16, not " + o.precision);
  return o;
}

// ---- what the exported model says about itself -------------------------------------------------------

// crossformer_deploy's ModelInfo, as far as a host needs it; defaults are ModelInfo's.
struct ModelInfo {
  std::string mode = "classifier";
  int num_classes = 0;
  Size input_size{224, 224};  // the export size; the only size of a static graph
  bool dynamic = true;
  std::optional<int> batch;  // a fixed batch, or any
  int stride = 32;
  std::vector<float> mean{0.485f, 0.456f, 0.406f}, std{0.229f, 0.224f, 0.225f};
  double crop_ratio = 0.875;
  std::optional<Size> max_size;  // a dynamic graph whose position bias was precomputed up to this size
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// The values are json.dumps() of numbers, lists of numbers, booleans and null; std::from_chars reads
// doubles exactly as Python wrote them (shortest round-trip), whatever the C locale.
std::optional<std::vector<double>> json_numbers(std::string const& key, std::string_view text) {
  text = trim(text);
  if (text == "null") return std::nullopt;
  bool const list = !text.empty() && text.front() == '[';
  if (list) {
    if (text.back() != ']') throw Error("model metadata " + key + " is not a list: " + std::string(text));
    text = text.substr(1, text.size() - 2);
  }
  std::vector<double> values;
  while (!trim(text).empty()) {
    size_t const comma = text.find(',');
    std::string_view item = trim(text.substr(0, comma));
    double v = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (ec != std::errc() || end != item.data() + item.size())
      throw Error("model metadata " + key + " holds '" + std::string(item) + "', not a number");
    values.push_back(v);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  return values;
}

ModelInfo read_model_info(ov::Model const& model, std::string const& path) {
  auto prop = [&](std::string const& key) -> std::optional<std::string> {
    std::vector<std::string> const where{"framework", key};
    if (!model.has_rt_info(where)) return std::nullopt;
    return model.get_rt_info<std::string>(where);
  };
  if (!prop("variant"))
    throw Error(path + ": not exported by crossformer-export (no CrossFormer metadata)");
  ModelInfo info;
  auto numbers = [&](std::string const& key, size_t count) -> std::optional<std::vector<double>> {
    auto text = prop(key);
    if (!text) return std::nullopt;
    auto v = json_numbers(key, *text);
    if (v && v->size() != count)
      throw Error("model metadata " + key + " has " + std::to_string(v->size()) + " values, expected " +
                  std::to_string(count));
    return v;
  };
  auto size_of = [](std::vector<double> const& v) { return Size{static_cast<int>(v[0]), static_cast<int>(v[1])}; };
  auto to_floats = [](std::vector<double> const& v) { return std::vector<float>(v.begin(), v.end()); };
  if (auto v = prop("mode")) info.mode = *v;
  if (auto v = numbers("num_classes", 1)) info.num_classes = static_cast<int>((*v)[0]);
  if (auto v = numbers("input_size", 2)) info.input_size = size_of(*v);
  if (auto v = prop("dynamic")) info.dynamic = trim(*v) == "true";
  if (auto v = numbers("batch", 1)) info.batch = static_cast<int>((*v)[0]);
  if (auto v = numbers("stride", 1)) info.stride = static_cast<int>((*v)[0]);
  if (auto v = numbers("mean", 3)) info.mean = to_floats(*v);  // numpy: np.asarray(mean, np.float32)
  if (auto v = numbers("std", 3)) info.std = to_floats(*v);
  if (auto v = numbers("crop_ratio", 1)) info.crop_ratio = (*v)[0];
  if (auto v = numbers("max_size", 2)) info.max_size = size_of(*v);
  if (info.mode != "classifier")
    throw Error(path + " is a backbone (feature maps, no labels); classify_openvino needs a classifier");
  return info;
}

// ---- sizes (crossformer_deploy.base.sizes.parse_size, and the graph's limits) ------------------------

Size parse_size(std::string const& text, int stride) {
  std::string t = text;  // "224", "256x320" (also X and *, as in Python)
  std::replace(t.begin(), t.end(), 'X', 'x');
  std::replace(t.begin(), t.end(), '*', 'x');
  size_t const x = t.find('x');
  Size s;
  try {
    std::string_view const all(t);
    s.height = positive(all.substr(0, x), "size");
    s.width = x == std::string::npos ? s.height : positive(all.substr(x + 1), "size");
  } catch (Error const&) {
    throw Error("size '" + text + "' is not N or HxW (e.g. 224 or 256x320)");
  }
  for (auto [name, n] : {std::pair{"height", s.height}, std::pair{"width", s.width}}) {
    if (n % stride) {
      int const lo = std::max(stride, n / stride * stride);
      throw Error("size " + text + ": " + name + " " + std::to_string(n) + " is not a multiple of " +
                  std::to_string(stride) + " (nearest: " + std::to_string(lo) + " or " +
                  std::to_string(lo + stride) + ")");
    }
  }
  return s;
}

void check_size_fits(Size s, ModelInfo const& info) {
  if (!info.dynamic && !(s == info.input_size))
    throw Error("size " + s.str() + " is outside this static graph: it takes " + info.input_size.str() +
                " only (export it with --static " + s.str() + ", or without --static)");
  if (info.max_size && (s.height > info.max_size->height || s.width > info.max_size->width))
    throw Error("size " + s.str() + " is above this graph's largest input " + info.max_size->str() +
                " (its position bias was precomputed up to there: export with a larger --max-size)");
}

// ---- OpenVINO ------------------------------------------------------------------------------------------

// OpenVINO's messages carry a trail of "Exception from <file>:<line>" and "Check '...' failed at" lines;
// the last line says what happened.
std::string brief(char const* what) {
  std::istringstream lines(what);
  std::string last;
  for (std::string line; std::getline(lines, line);)
    if (!trim(line).empty()) last = std::string(trim(line));
  return last.substr(0, 200);
}

std::shared_ptr<ov::Model> read_model(std::string const& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error("model file not found: " + path);
  if (fs::file_size(path, ec) == 0) throw Error("model file is empty: " + path);
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  // The frontend is picked by the extension rather than by Core::read_model's probing: on a file that is
  // not ONNX, that probing also tries the TensorFlow frontend, which logs parse errors to stderr.
  std::string const framework = ext == ".onnx" ? "onnx" : ext == ".xml" ? "ir" : "";
  if (framework.empty()) throw Error(path + ": expected an .onnx file or an OpenVINO IR .xml");
  try {
    ov::frontend::FrontEndManager manager;
    auto frontend = manager.load_by_framework(framework);
    return frontend->convert(frontend->load(path));
  } catch (std::exception const& e) {
    throw Error(path + ": OpenVINO cannot read this model (" + brief(e.what()) + ")");
  }
}

// ---- inputs --------------------------------------------------------------------------------------------

std::vector<char> read_file(std::string const& path, std::string const& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open " + what + " " + path);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<std::string> read_labels(std::string const& path, int num_classes) {
  std::ifstream f(path);
  if (!f) throw Error("cannot open labels file " + path);
  std::vector<std::string> labels;
  for (std::string line; std::getline(f, line);) labels.push_back(line);
  if (static_cast<int>(labels.size()) < num_classes)
    throw Error("labels file " + path + " has " + std::to_string(labels.size()) + " lines, the model " +
                std::to_string(num_classes) + " classes");
  return labels;
}

void write_file(std::string const& path, void const* data, size_t bytes) {
  std::ofstream f(path, std::ios::binary);
  if (!f.write(static_cast<char const*>(data), static_cast<std::streamsize>(bytes)))
    throw Error("cannot write " + path);
}

// ---- output --------------------------------------------------------------------------------------------

std::string json_string(std::string const& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += static_cast<char>(c);
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  return out + "\"";
}

struct Prediction {
  std::string image;
  std::vector<float> logits;
};

// Softmax in double and a stable order (ties: the lower class first), as crossformer_deploy's top_k().
std::vector<std::pair<int, double>> top_k(std::vector<float> const& row, int k) {
  double const top = *std::max_element(row.begin(), row.end());
  double sum = 0;
  for (float v : row) sum += std::exp(v - top);
  std::vector<int> idx(row.size());
  std::iota(idx.begin(), idx.end(), 0);
  k = std::min<int>(k, static_cast<int>(row.size()));
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int a, int b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
  std::vector<std::pair<int, double>> out;
  for (int i = 0; i < k; ++i) out.emplace_back(idx[i], std::exp(row[idx[i]] - top) / sum);
  return out;
}

void print(std::vector<Prediction> const& preds, std::vector<std::string> const& labels, int k, bool json) {
  auto label = [&](int c) { return c < static_cast<int>(labels.size()) ? labels[c] : "class " + std::to_string(c); };
  if (!json) {  // crossformer-infer's table
    for (auto const& p : preds) {
      std::printf("%s\n", p.image.c_str());
      for (auto [c, prob] : top_k(p.logits, k)) std::printf("  %6.2f%%  %s (%d)\n", prob * 100, label(c).c_str(), c);
    }
    return;
  }
  // crossformer-infer --json, plus the logits (%.9g: every float32 read back exactly)
  std::printf("[");
  for (size_t i = 0; i < preds.size(); ++i) {
    std::printf("%s\n {\"image\": %s, \"topk\": [", i ? "," : "", json_string(preds[i].image).c_str());
    auto const top = top_k(preds[i].logits, k);
    for (size_t j = 0; j < top.size(); ++j)
      std::printf("%s{\"class\": %d, \"label\": %s, \"prob\": %.6f}", j ? ", " : "", top[j].first,
                  json_string(label(top[j].first)).c_str(), top[j].second);
    std::printf("], \"logits\": [");
    for (size_t j = 0; j < preds[i].logits.size(); ++j) std::printf("%s%.9g", j ? ", " : "", preds[i].logits[j]);
    std::printf("]}");
  }
  std::printf("\n]\n");
}

// ---- the run -------------------------------------------------------------------------------------------

int run(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  Options const opt = parse_args(argc, argv);
  std::shared_ptr<ov::Model> model = read_model(opt.model);
  ModelInfo const info = read_model_info(*model, opt.model);
  Size const size = opt.size_text.empty() ? info.input_size : parse_size(opt.size_text, info.stride);
  check_size_fits(size, info);
  std::vector<std::string> const labels = opt.labels.empty() ? std::vector<std::string>{}
                                                             : read_labels(opt.labels, info.num_classes);
  if (model->inputs().size() != 1 || model->outputs().size() != 1)
    throw Error(opt.model + ": expected one input (image) and one output (logits)");

  // Inputs first: a bad image or file fails before the model is compiled.
  size_t const plane = static_cast<size_t>(size.height) * size.width * 3;
  std::vector<std::string> names;   // what each row of the batch is
  std::vector<uint8_t> pixels;      // images: uint8 NHWC, each resized and cropped like Pillow
  std::vector<float> raw;           // --raw: float32 NCHW
  int failed = 0;
  if (!opt.raw.empty()) {
    std::vector<char> const bytes = read_file(opt.raw, "raw input");
    if (bytes.empty() || bytes.size() % (plane * sizeof(float)))
      throw Error(opt.raw + " holds " + std::to_string(bytes.size()) + " bytes, not a whole number of 3x" +
                  size.str() + " float32 images (" + std::to_string(plane * sizeof(float)) + " bytes each)");
    raw.resize(bytes.size() / sizeof(float));
    std::memcpy(raw.data(), bytes.data(), bytes.size());
    for (size_t i = 0; i < raw.size() / plane; ++i) names.push_back("image " + std::to_string(i));
  } else {
    for (auto const& path : opt.images) {
      try {
        cf::RgbImage const im = cf::resize_and_crop(cf::load_image(path), size.height, size.width, info.crop_ratio);
        pixels.insert(pixels.end(), im.pixels.begin(), im.pixels.end());
        names.push_back(path);
      } catch (cf::ImageError const& e) {  // crossformer-infer: one line per bad image, the rest go on
        std::cerr << kProg << ": error: " << e.what() << "\n";
        ++failed;
      }
    }
    if (names.empty()) return 2;
    if (!opt.dump_pixels.empty()) write_file(opt.dump_pixels, pixels.data(), pixels.size());
  }
  int const n = static_cast<int>(names.size());
  int const batch = info.batch.value_or(n);  // a fixed-batch graph runs batches of its size

  // Reshape to the one shape this run needs: OpenVINO then plans memory and picks kernels once (what the
  // Python runner's static_shape does). The size was checked against the metadata above because this
  // would not catch it: OpenVINO's shape inference takes 225x224 in a dynamic CrossFormer graph.
  ov::Output<ov::Node> const input = model->input();
  try {
    model->reshape({{input, ov::PartialShape{batch, 3, size.height, size.width}}});
  } catch (std::exception const& e) {
    throw Error(opt.model + ": cannot take input " + std::to_string(batch) + "x3x" + size.str() + " (" +
                brief(e.what()) + ")");
  }
  // Preprocessing compiled into the model: from the u8 NHWC crop, the same float32 operations in the
  // same order as preprocess() in numpy ((x / 255 - mean) / std). OpenVINO may fold the two divisions
  // into multiplications: the input then differs by an ulp or so, the logits by ~1e-6 (README).
  ov::preprocess::PrePostProcessor ppp(model);
  if (raw.empty()) {
    ppp.input().tensor().set_element_type(ov::element::u8).set_layout("NHWC");
    ppp.input().model().set_layout("NCHW");
    ppp.input().preprocess().convert_element_type(ov::element::f32).scale(255.0f).mean(info.mean).scale(info.std);
  } else {
    ppp.input().tensor().set_element_type(ov::element::f32);  // an fp16-io graph converts inside
  }
  ppp.output().tensor().set_element_type(ov::element::f32);
  model = ppp.build();

  ov::Core core;
  ov::AnyMap config{{ov::hint::performance_mode.name(), ov::hint::PerformanceMode::LATENCY}};
  if (opt.device == "CPU")  // f32 unless asked: OpenVINO's own default is bf16 on CPUs that have it
    config[ov::hint::inference_precision.name()] = opt.precision == "bf16" ? ov::element::bf16 : ov::element::f32;
  if (opt.threads) config[ov::inference_num_threads.name()] = opt.threads;
  ov::CompiledModel compiled;
  try {
    compiled = core.compile_model(model, opt.device, config);
  } catch (std::exception const& e) {
    throw Error(opt.model + ": OpenVINO cannot compile this model for " + opt.device + " (" + brief(e.what()) + ")");
  }
  ov::InferRequest request = compiled.create_infer_request();

  // One or more batches; the last one of a fixed-batch graph is padded with zeros and the padding dropped.
  int const classes = static_cast<int>(compiled.output().get_partial_shape()[1].get_length());
  std::vector<Prediction> preds;
  std::vector<uint8_t> chunk_u8;
  std::vector<float> chunk_f32;
  for (int start = 0; start < n; start += batch) {
    int const rows = std::min(batch, n - start);
    ov::Tensor tensor;
    if (raw.empty()) {
      chunk_u8.assign(static_cast<size_t>(batch) * plane, 0);
      std::copy_n(pixels.begin() + static_cast<ptrdiff_t>(start * plane), rows * plane, chunk_u8.begin());
      tensor = ov::Tensor(ov::element::u8, {static_cast<size_t>(batch), static_cast<size_t>(size.height),
                                            static_cast<size_t>(size.width), 3}, chunk_u8.data());
    } else {
      chunk_f32.assign(static_cast<size_t>(batch) * plane, 0.0f);
      std::copy_n(raw.begin() + static_cast<ptrdiff_t>(start * plane), rows * plane, chunk_f32.begin());
      tensor = ov::Tensor(ov::element::f32, {static_cast<size_t>(batch), 3, static_cast<size_t>(size.height),
                                             static_cast<size_t>(size.width)}, chunk_f32.data());
    }
    request.set_input_tensor(tensor);
    request.infer();
    float const* out = request.get_output_tensor().data<float>();
    for (int r = 0; r < rows; ++r)
      preds.push_back({names[start + r], std::vector<float>(out + static_cast<size_t>(r) * classes,
                                                            out + static_cast<size_t>(r + 1) * classes)});

    if (opt.repeat && start == 0) {  // time the same request on the same input, like a serving loop
      std::vector<double> ms;
      for (int i = 0; i < opt.repeat; ++i) {
        auto const t0 = std::chrono::steady_clock::now();
        request.infer();
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::vector<double> sorted = ms;
      std::sort(sorted.begin(), sorted.end());
      double const mean = std::accumulate(ms.begin(), ms.end(), 0.0) / ms.size();
      std::fprintf(stderr, "%s: %d runs of batch %d at %s: median %.3f ms, mean %.3f ms, min %.3f ms\n", kProg,
                   opt.repeat, batch, size.str().c_str(), sorted[sorted.size() / 2], mean, sorted.front());
    }
  }
  print(preds, labels, opt.topk, opt.json);
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (Error const& e) {
    std::cerr << kProg << ": error: " << e.what() << "\n";
  } catch (cf::ImageError const& e) {
    std::cerr << kProg << ": error: " << e.what() << "\n";
  } catch (std::exception const& e) {  // OpenVINO at inference, out of memory: still one line
    std::cerr << kProg << ": error: " << brief(e.what()) << "\n";
  }
  return 2;
}
