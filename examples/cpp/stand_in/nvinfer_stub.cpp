// The stand-in libnvinfer / libnvinfer_plugin: see NvInfer.h beside this file.
#include "NvInfer.h"
namespace nvinfer1 { IRuntime* createInferRuntime(ILogger&) noexcept { return new IRuntime(); } }
extern "C" bool initLibNvInferPlugins(void*, char const*) { return true; }
