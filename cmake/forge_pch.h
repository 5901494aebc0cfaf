// The headers every torch-using forge target includes; precompiled once (cmake/ForgeDependencies).
#pragma once
#include <torch/torch.h>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>
