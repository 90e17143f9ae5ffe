// A shared library (hidden visibility) with the core configuration: no CUDA, no LibTorch.
#undef GPUSAFE_WITH_CUDA
#undef GPUSAFE_WITH_TORCH
#define GPUSAFE_WITH_CUDA 0
#define GPUSAFE_WITH_TORCH 0
#define GPUSAFE_PEER_PREFIX gpusafe_peer_core_lib
#include "peer.hpp"
