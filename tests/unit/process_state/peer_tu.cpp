// A translation unit of the test program compiled without CUDA and with the LibTorch flag, so
// that it lands in another ABI namespace than the test itself.
#undef GPUSAFE_WITH_CUDA
#undef GPUSAFE_WITH_TORCH
#define GPUSAFE_WITH_CUDA 0
#define GPUSAFE_WITH_TORCH 1
#define GPUSAFE_PEER_PREFIX gpusafe_peer_tu
#include "peer.hpp"
