// An inference server in miniature: worker threads each take a stream from a StreamPool, keep a
// thread_local cuBLAS handle (when cuBLAS is part of the build), and serve requests from pooled
// buffers (BufferPool). The process ends on SIGTERM or after --serve-ms, by returning from main
// (or std::exit with --exit exit) while every worker is still running: nothing is joined, and
// nothing crashes.
//
// The gpusafe parts:
//   - StreamPool: one stream per worker, round-robin; without a GPU the null stream.
//   - CublasHandle in thread_local storage: never destroyed for workers still running at exit; a
//     handle destroyed after gpusafe's exit handler is left to the OS.
//   - BufferPool: request buffers; acquire() throws ShuttingDown once exit has begun, and the
//     workers then park.
//   - RuntimeCallScope around each GPU step, so the exit handler waits for it (bounded) before the
//     CUDA runtime tears down.
//   - The pools live in gpusafe::NoDestructor: workers use them until the process is gone.
//
// It runs on the GPU when there is one (cuBLAS SGEMM on the worker's stream) and on the CPU
// otherwise (the same matrix product on host buffers).
//
//   example_inference_server [--workers N] [--serve-ms MS] [--exit return|exit]
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/handles.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/stream_pool.hpp"

#if defined(GPUSAFE_WITH_CUBLAS) && GPUSAFE_WITH_CUBLAS && GPUSAFE_WITH_CUDA
#include <cuda_runtime_api.h>

#include "gpusafe/handles/cublas.hpp"
#define INFERENCE_SERVER_CUBLAS 1
#else
#define INFERENCE_SERVER_CUBLAS 0
#endif

namespace gs = gpusafe;

namespace {

constexpr int kDim = 64;  // requests are kDim x kDim matrix products
constexpr std::size_t kMatrixBytes = sizeof(float) * kDim * kDim;

std::atomic<bool> stop_requested{false};

extern "C" void on_sigterm(int) { stop_requested.store(true); }

struct Args {
  int workers = 4;
  long serve_ms = 300;
  bool use_exit = false;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "inference_server: %s\nusage: inference_server [--workers N (1..64)] "
               "[--serve-ms MS] [--exit return|exit]\n",
               why);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
    const char* value = argv[++i];
    if (arg == "--workers") {
      a.workers = std::atoi(value);
      if (a.workers < 1 || a.workers > 64) usage("--workers must lie in 1..64");
    } else if (arg == "--serve-ms") {
      a.serve_ms = std::atol(value);
      if (a.serve_ms < 0) usage("--serve-ms must not be negative");
    } else if (arg == "--exit") {
      a.use_exit = std::strcmp(value, "exit") == 0;
      if (!a.use_exit && std::strcmp(value, "return") != 0) usage("--exit takes return or exit");
    } else {
      usage(("unknown option " + arg).c_str());
    }
  }
  return a;
}

/// What the workers share; leaked on purpose (they use it until the process is gone).
struct Server {
  gs::StreamPool streams;
  gs::BufferPool buffers;
  std::atomic<long> served{0};
  std::atomic<long> gpu_served{0};
  std::atomic<int> parked{0};

  Server(int workers, gs::BufferPoolOptions options)
      : streams(gs::StreamPoolOptions{static_cast<std::size_t>(workers)}),
        buffers(std::move(options)) {}
};

gs::BufferPoolOptions buffer_options(int workers) {
  gs::BufferPoolOptions o;
  o.name = "requests";
  o.kind = gs::MemoryKind::device;  // host memory when there is no GPU
  o.classes = {{kMatrixBytes, static_cast<std::size_t>(3 * workers)}};
  return o;
}

/// C = A * B on the host (the CPU path).
void multiply_on_host(const float* a, const float* b, float* c) {
  for (int i = 0; i < kDim; ++i)
    for (int j = 0; j < kDim; ++j) {
      float sum = 0;
      for (int k = 0; k < kDim; ++k) sum += a[i * kDim + k] * b[k * kDim + j];
      c[i * kDim + j] = sum;
    }
}

#if INFERENCE_SERVER_CUBLAS
/// C = A * B with cuBLAS on the worker's stream; false when the step was not run (exiting).
bool multiply_on_gpu(cudaStream_t stream, float* a, float* b, float* c) {
  thread_local gs::CublasHandle blas = gs::CublasHandle::create();  // one per worker
  gs::RuntimeCallScope scope;  // the exit handler waits for this step
  if (!scope) return false;
  cudaMemsetAsync(a, 0, kMatrixBytes, stream);
  cudaMemsetAsync(b, 0, kMatrixBytes, stream);
  cublasSetStream(blas.get(), stream);
  const float one = 1.0f, zero = 0.0f;
  cublasSgemm(blas.get(), CUBLAS_OP_N, CUBLAS_OP_N, kDim, kDim, kDim, &one, a, kDim, b, kDim, &zero,
              c, kDim);
  return cudaStreamSynchronize(stream) == cudaSuccess;
}
#endif

/// Serves requests until the process ends; parks once exit has begun.
void worker(Server& server) {
  const auto stream = server.streams.get();
  (void)stream;
  for (;;) {
    try {
      auto a = server.buffers.acquire(kMatrixBytes);
      auto b = server.buffers.acquire(kMatrixBytes);
      auto c = server.buffers.acquire(kMatrixBytes);
      bool on_gpu = false;
#if INFERENCE_SERVER_CUBLAS
      if (!a.is_fallback()) {
        on_gpu = multiply_on_gpu(stream, a.as<float>(), b.as<float>(), c.as<float>());
        if (!on_gpu) throw gs::ShuttingDown("the process is exiting");
      }
#endif
      if (!on_gpu) {
        for (int i = 0; i < kDim * kDim; ++i) {
          a.as<float>()[i] = 1.0f;
          b.as<float>()[i] = 0.5f;
        }
        multiply_on_host(a.as<float>(), b.as<float>(), c.as<float>());
      }
      server.served.fetch_add(1, std::memory_order_relaxed);
      if (on_gpu) server.gpu_served.fetch_add(1, std::memory_order_relaxed);
    } catch (const gs::ShuttingDown&) {
      server.parked.fetch_add(1);
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // until the process ends
    } catch (const gs::PoolExhausted&) {
      std::this_thread::yield();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  std::signal(SIGTERM, &on_sigterm);

  // Leaked on purpose: the workers use the pools and their std::thread objects are never joined.
  static gs::NoDestructor<Server> server(args.workers, buffer_options(args.workers));
  static gs::NoDestructor<std::vector<std::thread>> workers;
  for (int i = 0; i < args.workers; ++i) workers->emplace_back(worker, std::ref(server.get()));

  const auto start = std::chrono::steady_clock::now();
  while (!stop_requested.load() &&
         std::chrono::steady_clock::now() - start < std::chrono::milliseconds(args.serve_ms))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));

  const long served = server->served.load();
  std::printf("inference_server: %d workers served %ld requests (%ld on the GPU) in %ld ms%s\n",
              args.workers, served, server->gpu_served.load(),
              static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::steady_clock::now() - start)
                                    .count()),
              stop_requested.load() ? " (SIGTERM)" : "");
  std::printf("  streams: %s; cuBLAS: %s; request buffers: %s\n",
              server->streams.fell_back()
                  ? "the null stream (no GPU)"
                  : (std::to_string(server->streams.size()) + " pooled").c_str(),
              INFERENCE_SERVER_CUBLAS ? "a thread_local handle per worker on the GPU path"
                                      : "not in this build",
              server->buffers.is_fallback() ? "host memory (CPU fallback)" : "device memory");
  std::printf("  exiting with every worker still running (%s)\n",
              args.use_exit ? "std::exit" : "return from main");
  std::fflush(stdout);
  if (served == 0) return 1;
  if (args.use_exit) std::exit(0);
  return 0;
}
