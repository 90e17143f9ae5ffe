// Compiled with -Wpadded -Werror: gpusafe's headers must not break a consumer's strict build
// when GPUSAFE_SYSTEM_INCLUDE=ON.
#include <gpusafe/gpusafe.hpp>

int probe_version() { return GPUSAFE_VERSION; }
