// A synthetic video pipeline on gpusafe: frames and face crops from a BufferPool, face models in
// a ModelCache whose budget holds only some of them, and a MemoryManager that cleans up every
// 100 frames, releases memory over a threshold and records the memory history.
//
// It runs on the GPU when there is one and on the CPU otherwise (the pools fall back to host
// memory). At the end it prints frames per second, the allocation time the pool saved against
// plain allocation (measured in the same run), peak memory, evictions and leaks, and checks that
// the process's peak resident memory after the first 100 frames and at the end differ by less
// than 1% (exit code 1 otherwise).
//
//   example_video_pipeline [--frames N] [--csv PATH] [--threshold F] [--timer-ms MS]
//
// The memory history goes to PATH (default video_pipeline_memory.csv); scripts/plot_memory.sh
// turns it into a PNG.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gpusafe/gpusafe.hpp"

#if GPUSAFE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace gs = gpusafe;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kFrameBytes = 640 * 360 * 3;  // one RGB frame
constexpr std::size_t kCropBytes = 64 * 1024;       // one face crop
constexpr std::size_t kWeightsSlot = 3 * kMiB;
constexpr int kFaceModels = 6;

struct Args {
  long frames = 10000;
  std::string csv = "video_pipeline_memory.csv";
  double threshold = 0.9;
  long timer_ms = 0;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "video_pipeline: %s\nusage: video_pipeline [--frames N] [--csv PATH] "
               "[--threshold F (0..1)] [--timer-ms MS]\n",
               why);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
      return argv[++i];
    };
    char* end = nullptr;
    if (arg == "--frames") {
      a.frames = std::strtol(value(), &end, 10);
      if (*end || a.frames < 1) usage("--frames needs a positive integer");
    } else if (arg == "--csv") {
      a.csv = value();
    } else if (arg == "--threshold") {
      a.threshold = std::strtod(value(), &end);
      if (*end || !(a.threshold >= 0 && a.threshold <= 1)) usage("--threshold needs 0..1");
    } else if (arg == "--timer-ms") {
      a.timer_ms = std::strtol(value(), &end, 10);
      if (*end || a.timer_ms < 0) usage("--timer-ms needs 0 or more");
    } else {
      usage(("unknown argument " + arg).c_str());
    }
  }
  return a;
}

/// The process's peak resident memory (VmHWM) in bytes.
std::size_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.compare(0, 6, "VmHWM:") == 0)
      return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  return 0;
}

/// Writes `value` over a buffer wherever it lives.
void fill(gs::BufferLease& lease, int value) {
#if GPUSAFE_WITH_CUDA
  if (lease.kind() == gs::MemoryKind::device) {
    (void)cudaMemset(lease.data(), value, lease.size());
    return;
  }
#endif
  std::memset(lease.data(), value, lease.size());
}

/// A stand-in for inference: reads a few bytes of the frame and of the weights (host only).
std::uint64_t infer(const gs::BufferLease& frame, const gs::BufferLease& weights) {
  if (frame.kind() == gs::MemoryKind::device) return 1;
  const auto* f = frame.as<const unsigned char>();
  const auto* w = weights.as<const unsigned char>();
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < frame.size(); i += 4096) sum += f[i] * w[i % weights.size()];
  return sum;
}

/// A model: its weights are a buffer of the weights pool (given back when the model dies).
struct FaceModel {
  std::string name;
  gs::BufferLease weights;
};

/// Touches every buffer of a pool once, as a real-time pipeline does at start-up, so no page
/// fault (or first-use allocation) happens in the frame loop.
void warm_up(gs::BufferPool& pool) {
  for (const auto& c : pool.stats().classes) {
    std::vector<gs::BufferLease> all;
    while (auto lease = pool.try_acquire(c.bytes)) {
      fill(lease, 0);
      all.push_back(std::move(lease));
    }
  }
}

/// Mean nanoseconds of one allocate+touch+free of `bytes` through the runtime (cudaMalloc and
/// cudaFree on a GPU, aligned host allocation otherwise).
double plain_alloc_ns(gs::MemoryKind kind, std::size_t bytes, int rounds) {
  const auto t0 = Clock::now();
  for (int i = 0; i < rounds; ++i) {
    void* p = nullptr;
    gs::throw_on_failure(gs::DefaultRuntime::allocate(kind, 0, bytes, &p), "plain allocation");
    if (kind == gs::MemoryKind::host) static_cast<volatile char*>(p)[i % bytes] = 1;
    (void)gs::DefaultRuntime::deallocate(kind, 0, p);
  }
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / rounds;
}

double pool_alloc_ns(gs::BufferPool& pool, std::size_t bytes, int rounds) {
  const auto t0 = Clock::now();
  for (int i = 0; i < rounds; ++i) {
    auto lease = pool.acquire(bytes);
    if (lease.kind() == gs::MemoryKind::host)
      static_cast<volatile char*>(lease.data())[i % bytes] = 1;
  }
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / rounds;
}

std::string mib(std::size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / kMiB);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  const bool gpu = gs::is_cuda_available();
  std::printf("video_pipeline: %ld frames of 640x360 RGB on %s\n", args.frames,
              gpu ? gs::get_device_info(0).name.c_str() : "the CPU (no usable GPU)");
  gs::set_log_level(gs::LogLevel::error);  // the fallback notice is in the line above

  // --- resources --------------------------------------------------------------------------------
  gs::BufferPoolOptions fo;
  fo.name = "frames";
  fo.kind = gs::MemoryKind::device;
  fo.fallback = gs::Fallback::host;
  fo.classes = {{kCropBytes, 16}, {kFrameBytes, 8}};
  fo.track_leases = true;
  gs::BufferPool frames(fo);

  gs::BufferPoolOptions wo = fo;
  wo.name = "weights";
  wo.classes = {{kWeightsSlot, 7}};
  gs::BufferPool weights(wo);

  gs::ModelCacheOptions co;
  co.name = "face_models";
  co.byte_budget = 2 * kMiB + 3 * kWeightsSlot;  // the detector and 3 of the 6 face models
  gs::ModelCache<std::string, FaceModel> models(co);
  auto loader = [&weights](std::string name, std::size_t bytes, int seed) {
    return [&weights, name, bytes, seed] {
      auto m = std::make_shared<FaceModel>();
      m->name = name;
      m->weights = weights.acquire(bytes, GPUSAFE_LEASE_TAG("model weights"));
      fill(m->weights, seed);
      return gs::Loaded<FaceModel>{m, bytes};
    };
  };
  models.add("detector", loader("detector", 2 * kMiB, 7), gs::Residency::primary);
  for (int i = 0; i < kFaceModels; ++i) {
    const std::string key = "face" + std::to_string(i);
    models.add(key, loader(key, kWeightsSlot, i + 1), gs::Residency::secondary, kWeightsSlot);
  }

  gs::MemoryManagerOptions mo;
  mo.name = "video";
  mo.cleanup_every_frames = 100;
  mo.release_threshold = args.threshold;
  mo.cleanup_interval = std::chrono::milliseconds(args.timer_ms);
  mo.history_length = static_cast<std::size_t>(args.frames / 100 + 64);
  gs::MemoryManager manager(mo);
  manager.attach(frames);
  manager.attach(weights);
  manager.attach(models);
  if (args.timer_ms > 0) manager.start();

  warm_up(frames);
  warm_up(weights);
  models.preload();
  manager.snapshot();

  // --- the frame loop ---------------------------------------------------------------------------
  const bool tty = ::isatty(STDOUT_FILENO) != 0;
  const long early = args.frames < 100 ? args.frames : 100;
  std::size_t rss_early = 0;
  std::uint64_t checksum = 0;
  const auto t0 = Clock::now();
  auto last = t0;
  for (long f = 1; f <= args.frames; ++f) {
    auto frame = frames.acquire(kFrameBytes, GPUSAFE_LEASE_TAG("decoded frame"));
    fill(frame, static_cast<int>(f & 0xff));
    auto detector = models.get("detector");
    checksum += infer(frame, detector->weights);
    // Faces in view change every 40 frames; every third frame also shows the next one.
    const long face = (f / 40 + (f % 3 == 0 ? 1 : 0)) % kFaceModels;
    for (int c = 0; c < 2; ++c) {
      auto crop = frames.acquire(kCropBytes, GPUSAFE_LEASE_TAG("face crop"));
      fill(crop, c);
      auto model = models.get("face" + std::to_string(face));
      checksum += infer(crop, model->weights);
    }
    manager.on_frame();
    if (f == early) rss_early = peak_rss_bytes();
    if (f % 1000 == 0 || f == args.frames) {
      const auto now = Clock::now();
      const double fps = static_cast<double>(f % 1000 ? f % 1000 : 1000) /
                         std::chrono::duration<double>(now - last).count();
      last = now;
      if (tty) {
        std::printf("\rframe %6ld/%ld  %7.0f fps", f, args.frames, fps);
      } else if (f % 1000 == 0) {
        std::printf("frame %6ld/%ld  %7.0f fps\n", f, args.frames, fps);
      }
      std::fflush(stdout);
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (tty) std::printf("\n");
  const std::size_t rss_end = peak_rss_bytes();
  manager.snapshot();
  manager.stop();

  // --- pool against plain allocation, same run --------------------------------------------------
  const int rounds = 300;
  const double plain_ns = plain_alloc_ns(frames.kind(), kFrameBytes, rounds);
  const double pooled_ns = pool_alloc_ns(frames, kFrameBytes, rounds);
  // Three buffers per frame (one frame, two crops); the crops would cost about as much each.
  const double saved_ms = (plain_ns - pooled_ns) * 3.0 * static_cast<double>(args.frames) / 1e6;

  // --- report -----------------------------------------------------------------------------------
  std::size_t peak_used = 0;
  for (const auto& s : manager.history()) peak_used = std::max(peak_used, s.device_used_bytes);
  const auto fs = frames.stats();
  const auto ws = weights.stats();
  const auto cs = models.stats();
  const auto leaks = manager.leak_report();
  // Resident models hold one weights buffer each; anything else still out is a leak.
  const std::size_t weights_out = ws.totals.in_use + ws.overflow_live;
  const std::size_t leases_out =
      fs.totals.in_use + fs.overflow_live +
      (weights_out > cs.models_resident ? weights_out - cs.models_resident : 0);
  const double ratio =
      rss_early ? static_cast<double>(rss_end) / static_cast<double>(rss_early) : 0;

  std::printf("\n%s\n", manager.report().c_str());
  std::printf("frames per second     %.0f (%ld frames in %.2f s, checksum %llu)\n",
              static_cast<double>(args.frames) / seconds, args.frames, seconds,
              static_cast<unsigned long long>(checksum));
  std::printf(
      "allocation            plain %s alloc+free %.1f us, pool acquire+release %.0f ns (lease "
      "tracking on): %.0f ms saved over the run\n",
      gpu ? "cudaMalloc/cudaFree" : "host", plain_ns / 1e3, pooled_ns, saved_ms);
  std::printf("peak memory           %s %s in use (snapshots); pools reserve %s\n",
              mib(peak_used).c_str(), gpu ? "device" : "host (whole machine)",
              mib(fs.totals.bytes_reserved + ws.totals.bytes_reserved).c_str());
  std::printf(
      "model cache           %llu hits, %llu loads, %llu evictions (budget %s, "
      "resident %s)\n",
      static_cast<unsigned long long>(cs.hits), static_cast<unsigned long long>(cs.loads),
      static_cast<unsigned long long>(cs.evictions_total()), mib(cs.byte_budget).c_str(),
      mib(cs.bytes_resident).c_str());
  std::printf("leaks                 %s\n",
              leases_out == 0 ? "none (0 leases out besides resident models)"
                              : (std::to_string(leases_out) + " lease(s) out!").c_str());
  if (!leaks.records.empty()) std::printf("%s\n", leaks.to_string().c_str());
  std::printf("peak resident memory  %s after %ld frames, %s after %ld: ratio %.4f (limit 1.01)\n",
              mib(rss_early).c_str(), early, mib(rss_end).c_str(), args.frames, ratio);

  std::ofstream csv(args.csv);
  csv << manager.history_csv();
  csv.close();
  std::printf("memory history        %s (%zu snapshots; plot: scripts/plot_memory.sh %s out.png)\n",
              args.csv.c_str(), manager.history().size(), args.csv.c_str());

  manager.shutdown();
  int rc = 0;
  if (!csv) {
    std::fprintf(stderr, "video_pipeline: could not write %s\n", args.csv.c_str());
    rc = 1;
  }
  if (kSanitized) {
    // ASan keeps freed memory in quarantine and TSan adds shadow memory: resident size says
    // nothing about the program's own use there.
    std::printf("(memory flatness not judged: sanitizer build)\n");
  } else if (!(ratio > 0 && ratio < 1.01)) {
    std::fprintf(stderr, "video_pipeline: memory grew: peak RSS ratio %.4f is not under 1.01\n",
                 ratio);
    rc = 1;
  }
  if (leases_out != 0) {
    std::fprintf(stderr, "video_pipeline: %zu lease(s) still out\n", leases_out);
    rc = 1;
  }
  return rc;
}
