// Hazard test library a (built with -fvisibility=hidden): see shared_lib.hpp.
#define GPUSAFE_HAZARD_LIB_IMPLEMENTATION
#include "shared_lib.hpp"

GPUSAFE_HAZARD_LIB_DEFINE(gpusafe_hazard_liba)
