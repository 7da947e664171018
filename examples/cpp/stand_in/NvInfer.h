// A stand-in for the TensorRT 10 declarations classify.cpp uses (signatures as in NvInferRuntime.h), with a
// fake engine behind them: 'image' [-1,3,224,224] (profile batch 1..8) -> 'logits' [B,10]. Only for compiling,
// linking and exercising the host-side logic of the example without TensorRT (tests/examples/test_cpp_tensorrt.py).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cuda_runtime_api.h>
namespace nvinfer1 {
class Dims64 { public: static constexpr int32_t MAX_DIMS{8}; int32_t nbDims{0}; int64_t d[MAX_DIMS]{}; };
using Dims = Dims64;
enum class DataType : int32_t { kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3 };
enum class TensorIOMode : int32_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };
enum class OptProfileSelector : int32_t { kMIN = 0, kOPT = 1, kMAX = 2 };
class ILogger { public:
  enum class Severity : int32_t { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
  virtual void log(Severity severity, char const* msg) noexcept = 0;
  virtual ~ILogger() = default; };
class IExecutionContext { public:
  virtual ~IExecutionContext() = default;
  bool setOptimizationProfileAsync(int32_t, cudaStream_t) noexcept { return true; }
  bool setInputShape(char const*, Dims const& dims) noexcept { shape = dims; return true; }
  Dims getTensorShape(char const*) const noexcept { Dims o; o.nbDims = 2; o.d[0] = shape.d[0]; o.d[1] = 10; return o; }
  bool setTensorAddress(char const*, void*) noexcept { return true; }
  bool enqueueV3(cudaStream_t) noexcept { return true; }
  Dims shape{}; };
class ICudaEngine { public:
  virtual ~ICudaEngine() = default;
  IExecutionContext* createExecutionContext() noexcept { return new IExecutionContext(); }
  int32_t getNbIOTensors() const noexcept { return 2; }
  char const* getIOTensorName(int32_t i) const noexcept { return i == 0 ? "image" : "logits"; }
  TensorIOMode getTensorIOMode(char const* n) const noexcept {
    return std::strcmp(n, "image") == 0 ? TensorIOMode::kINPUT : TensorIOMode::kOUTPUT; }
  DataType getTensorDataType(char const*) const noexcept { return DataType::kFLOAT; }
  int32_t getNbOptimizationProfiles() const noexcept { return 1; }
  Dims getProfileShape(char const*, int32_t, OptProfileSelector s) const noexcept {
    Dims d; d.nbDims = 4; d.d[0] = s == OptProfileSelector::kMAX ? 8 : 1; d.d[1] = 3; d.d[2] = 224; d.d[3] = 224;
    return d; } };
class IRuntime { public:
  virtual ~IRuntime() = default;
  ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept {
    return size >= 4 && std::memcmp(blob, "MOCK", 4) == 0 ? new ICudaEngine() : nullptr; } };
IRuntime* createInferRuntime(ILogger& logger) noexcept;
}  // namespace nvinfer1
