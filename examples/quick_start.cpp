// The README's quick start: a frame pool, a model cache and a cleanup guard in a loop.
#include <cstdio>
#include <gpusafe/gpusafe.hpp>

struct FaceModel {
  std::vector<float> weights;
};

int main() {
  gpusafe::BufferPoolOptions frames_options;
  frames_options.name = "frames";
  frames_options.kind = gpusafe::MemoryKind::device;  // host memory when there is no GPU
  frames_options.classes = {{640 * 360 * 3, 8}};      // 8 preallocated frame buffers
  gpusafe::BufferPool frames(frames_options);

  gpusafe::ModelCacheOptions cache_options;
  cache_options.byte_budget = 64 << 20;  // secondary models are evicted beyond this
  gpusafe::ModelCache<std::string, FaceModel> models(cache_options);
  models.add(
      "restorer",
      [] {
        auto m = std::make_shared<FaceModel>();
        m->weights.resize(1 << 20);
        return gpusafe::Loaded<FaceModel>{m, m->weights.size() * sizeof(float)};
      },
      gpusafe::Residency::secondary, 4 << 20);

  int frames_done = 0;
  for (int frame = 0; frame < 100; ++frame) {
    auto buffer = frames.acquire(640 * 360 * 3);  // no driver call: a preallocated slot
    auto restorer = models.get("restorer");       // loaded once, shared, LRU-evictable
    gpusafe::SafeCudaCleanup cleanup;             // runs deferred actions, never throws
    cleanup.defer([&] { ++frames_done; });        // e.g. publish the frame
  }  // actions run, then the buffer returns to the pool
  std::printf("%d frames; buffers on %s\n", frames_done,
              frames.stats().fallback ? "the host (no GPU)" : "the GPU");
  return 0;
}
