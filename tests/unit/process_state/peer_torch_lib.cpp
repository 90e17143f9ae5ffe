// A shared library (hidden visibility) with the LibTorch flag and no CUDA.
#undef GPUSAFE_WITH_CUDA
#undef GPUSAFE_WITH_TORCH
#define GPUSAFE_WITH_CUDA 0
#define GPUSAFE_WITH_TORCH 1
#define GPUSAFE_PEER_PREFIX gpusafe_peer_torch_lib
#include "peer.hpp"
