// classify: load a CrossFormer TensorRT engine, run one preprocessed batch, print the top-5 classes.
//
//   classify ENGINE INPUT.raw BxCxHxW [--labels labels.txt] [--plugin lib.so]...
//
// INPUT.raw is float32 NCHW as written by make_input.py (our Python preprocessing, so C++ needs no
// image decoding). The engine's GroupedAttention kernels, when present, were built with the plugin's
// ahead-of-time implementation and are embedded in the plan: no Python and no plugin library is
// needed here. --plugin dlopens extra plugin libraries (for engines that use classic C++ plugins).
//
// Written against TensorRT 10's C++ API (also in 11): IRuntime::deserializeCudaEngine,
// named I/O tensors, setInputShape, setTensorAddress, enqueueV3.
#include <NvInfer.h>
#ifdef CF_WITH_NVINFER_PLUGIN
#include <NvInferPlugin.h>
#endif
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, char const* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
  }
};

void check_cuda(cudaError_t status, char const* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

std::vector<char> read_file(std::string const& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::vector<std::string> read_lines(std::string const& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);) lines.push_back(line);
  return lines;
}

// "1x3x224x224" -> Dims {1, 3, 224, 224}
nvinfer1::Dims parse_shape(std::string const& text) {
  nvinfer1::Dims d{};
  std::stringstream ss(text);
  for (std::string part; std::getline(ss, part, 'x');) {
    if (d.nbDims == nvinfer1::Dims::MAX_DIMS) throw std::runtime_error("too many dims in " + text);
    d.d[d.nbDims++] = std::stoll(part);
  }
  if (d.nbDims != 4) throw std::runtime_error("shape must be BxCxHxW, got " + text);
  return d;
}

int64_t volume(nvinfer1::Dims const& d) {
  int64_t n = 1;
  for (int i = 0; i < d.nbDims; ++i) n *= d.d[i];
  return n;
}

std::string to_string(nvinfer1::Dims const& d) {
  std::string s;
  for (int i = 0; i < d.nbDims; ++i) s += (i ? "x" : "") + std::to_string(d.d[i]);
  return s;
}

size_t element_size(nvinfer1::DataType t) {
  switch (t) {
    case nvinfer1::DataType::kFLOAT: return 4;
    case nvinfer1::DataType::kHALF: return 2;
    default: throw std::runtime_error("classify handles float32 and float16 I/O tensors only");
  }
}

// The first optimisation profile whose [min, max] holds `shape` (TensorRT refuses shapes outside the
// active profile, so pick the right one instead of failing).
int pick_profile(nvinfer1::ICudaEngine const& engine, char const* input, nvinfer1::Dims const& shape) {
  for (int p = 0; p < engine.getNbOptimizationProfiles(); ++p) {
    auto lo = engine.getProfileShape(input, p, nvinfer1::OptProfileSelector::kMIN);
    auto hi = engine.getProfileShape(input, p, nvinfer1::OptProfileSelector::kMAX);
    bool inside = lo.nbDims == shape.nbDims;
    for (int i = 0; inside && i < shape.nbDims; ++i) inside = lo.d[i] <= shape.d[i] && shape.d[i] <= hi.d[i];
    if (inside) return p;
  }
  throw std::runtime_error("shape " + to_string(shape) + " is outside every optimisation profile of the engine");
}

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { check_cuda(cudaMalloc(&ptr, bytes), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(DeviceBuffer const&) = delete;
  DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

int run(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: classify ENGINE INPUT.raw BxCxHxW [--labels labels.txt] [--plugin lib.so]...\n";
    return 2;
  }
  std::string engine_path = argv[1], input_path = argv[2];
  nvinfer1::Dims shape = parse_shape(argv[3]);
  std::vector<std::string> labels;
  for (int i = 4; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--labels" && i + 1 < argc) {
      labels = read_lines(argv[++i]);
    } else if (arg == "--plugin" && i + 1 < argc) {
      // RTLD_GLOBAL: a plugin library registers its creators through static initialisers
      if (!dlopen(argv[++i], RTLD_NOW | RTLD_GLOBAL)) throw std::runtime_error(std::string("dlopen: ") + dlerror());
    } else {
      throw std::runtime_error("unknown argument " + arg);
    }
  }

  Logger logger;
#ifdef CF_WITH_NVINFER_PLUGIN
  initLibNvInferPlugins(&logger, "");  // TensorRT's own plugins, should the ONNX parser have used one
#endif
  std::vector<char> plan = read_file(engine_path);
  std::unique_ptr<nvinfer1::IRuntime> runtime{nvinfer1::createInferRuntime(logger)};
  std::unique_ptr<nvinfer1::ICudaEngine> engine{runtime->deserializeCudaEngine(plan.data(), plan.size())};
  if (!engine) throw std::runtime_error("could not deserialise " + engine_path + " (see the TensorRT log above)");
  std::unique_ptr<nvinfer1::IExecutionContext> context{engine->createExecutionContext()};
  if (!context) throw std::runtime_error("could not create an execution context");

  char const* input = nullptr;
  char const* output = nullptr;
  for (int i = 0; i < engine->getNbIOTensors(); ++i) {
    char const* name = engine->getIOTensorName(i);
    if (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT) input = name;
    else if (!output) output = name;  // a classifier has one output: logits [B, classes]
  }
  if (!input || !output) throw std::runtime_error("engine needs one input and one output");

  // everything that can be checked on the host first: a wrong shape or file fails before any GPU work
  int profile = pick_profile(*engine, input, shape);
  // input: raw float32 from disk, converted on the host when the engine takes fp16
  std::vector<char> raw = read_file(input_path);
  size_t n_in = static_cast<size_t>(volume(shape));
  if (raw.size() != n_in * sizeof(float))
    throw std::runtime_error(input_path + " holds " + std::to_string(raw.size()) + " bytes, shape " + to_string(shape) +
                             " needs " + std::to_string(n_in * sizeof(float)));
  nvinfer1::DataType in_type = engine->getTensorDataType(input);
  std::vector<char> host_in(n_in * element_size(in_type));
  float const* in_f = reinterpret_cast<float const*>(raw.data());
  if (in_type == nvinfer1::DataType::kFLOAT) std::copy(raw.begin(), raw.end(), host_in.begin());
  else for (size_t i = 0; i < n_in; ++i) reinterpret_cast<__half*>(host_in.data())[i] = __float2half(in_f[i]);

  cudaStream_t stream;
  check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
  if (!context->setOptimizationProfileAsync(profile, stream)) throw std::runtime_error("setOptimizationProfile");
  if (!context->setInputShape(input, shape)) throw std::runtime_error("setInputShape " + to_string(shape));

  nvinfer1::Dims out_shape = context->getTensorShape(output);  // known once the input shape is set
  nvinfer1::DataType out_type = engine->getTensorDataType(output);
  size_t n_out = static_cast<size_t>(volume(out_shape));
  DeviceBuffer d_in(host_in.size()), d_out(n_out * element_size(out_type));
  check_cuda(cudaMemcpyAsync(d_in.ptr, host_in.data(), host_in.size(), cudaMemcpyHostToDevice, stream), "copy in");
  context->setTensorAddress(input, d_in.ptr);
  context->setTensorAddress(output, d_out.ptr);
  if (!context->enqueueV3(stream)) throw std::runtime_error("enqueueV3 failed (see the TensorRT log above)");
  std::vector<char> host_out(n_out * element_size(out_type));
  check_cuda(cudaMemcpyAsync(host_out.data(), d_out.ptr, host_out.size(), cudaMemcpyDeviceToHost, stream), "copy out");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  cudaStreamDestroy(stream);

  std::vector<float> logits(n_out);
  for (size_t i = 0; i < n_out; ++i)
    logits[i] = out_type == nvinfer1::DataType::kFLOAT ? reinterpret_cast<float const*>(host_out.data())[i]
                                                       : __half2float(reinterpret_cast<__half const*>(host_out.data())[i]);

  // softmax + top-5 per image (in double: a trained model's logits can be large)
  int64_t batch = out_shape.d[0], classes = n_out / std::max<int64_t>(batch, 1);
  for (int64_t b = 0; b < batch; ++b) {
    float const* row = logits.data() + b * classes;
    double top = *std::max_element(row, row + classes), sum = 0;
    for (int64_t c = 0; c < classes; ++c) sum += std::exp(row[c] - top);
    std::vector<int64_t> idx(classes);
    std::iota(idx.begin(), idx.end(), 0);
    int64_t k = std::min<int64_t>(5, classes);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t c) { return row[a] > row[c]; });
    std::printf("image %lld\n", static_cast<long long>(b));
    for (int64_t i = 0; i < k; ++i) {
      int64_t c = idx[i];
      std::string name = c < static_cast<int64_t>(labels.size()) ? labels[c] : "class " + std::to_string(c);
      std::printf("  %6.2f%%  %s (%lld)\n", 100.0 * std::exp(row[c] - top) / sum, name.c_str(), static_cast<long long>(c));
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (std::exception const& e) {
    std::cerr << "classify: error: " << e.what() << "\n";
    return 2;
  }
}
