// Stand-in: see NvInfer.h beside this file.
#pragma once
extern "C" bool initLibNvInferPlugins(void* logger, char const* libNamespace);
