// Training with LibTorch and gpusafe, the intended way (a tiny GAN on synthetic data):
//   - gpusafe::torch_device() picks the device (CUDA only when gpusafe and LibTorch both can use
//     it) and pool_options_for(device, ...) a pool for the input batches on that device;
//   - the generator and the discriminator, two module types, live in one ModuleCache; each is
//     loaded by checkpoint_or_fresh_loader (the checkpoint when it exists, else a fresh module)
//     in training mode, and read back with get_module<Generator> / get_module<Discriminator>;
//   - each step takes its real batch from the pool as a zero-copy tensor (as_tensor) and has a
//     SafeCudaCleanup that gives the batch back at the end of the step, whatever happens;
//   - StopOnSignals: SIGINT or SIGTERM ends the loop at a step boundary, the checkpoints are saved
//     (save_checkpoint writes through a temporary file, so a checkpoint is never half written)
//     and main returns normally, so every cleanup runs;
//   - the program then "restarts": a new cache restores both checkpoints and training continues
//     from them (the example checks that the restored weights are the saved ones).
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/guards.hpp"
#include "gpusafe/signals.hpp"
#include "gpusafe/torch.hpp"

namespace gs = gpusafe;

namespace {

constexpr int kNoise = 4;      // generator input
constexpr int kFeatures = 8;   // sample width
constexpr int kBatch = 64;     // samples per step
constexpr int kSteps = 30;     // steps per run
constexpr float kMean = 2.0f;  // the real data: N(2, 0.5) in every feature

struct GeneratorImpl : torch::nn::Module {
  GeneratorImpl()
      : net(register_module("net",
                            torch::nn::Sequential(torch::nn::Linear(kNoise, 16), torch::nn::ReLU(),
                                                  torch::nn::Linear(16, kFeatures)))) {}
  torch::Tensor forward(const torch::Tensor& z) { return net->forward(z); }
  torch::nn::Sequential net;
};
TORCH_MODULE(Generator);

struct DiscriminatorImpl : torch::nn::Module {
  DiscriminatorImpl()
      : net(register_module(
            "net", torch::nn::Sequential(torch::nn::Linear(kFeatures, 16), torch::nn::LeakyReLU(),
                                         torch::nn::Linear(16, 1)))) {}
  torch::Tensor forward(const torch::Tensor& x) { return net->forward(x); }
  torch::nn::Sequential net;
};
TORCH_MODULE(Discriminator);

/// A fresh directory for the checkpoints.
std::string temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/gpusafe_training_XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  return buf.data();
}

struct Paths {
  std::string generator, discriminator;
};

/// Registers both models in `models`: their checkpoints when present, fresh modules otherwise,
/// on `device`, in training mode.
void add_models(gs::ModuleCache<std::string>& models, const Paths& paths,
                const torch::Device& device) {
  models.add("generator",
             gs::as_module_loader(gs::checkpoint_or_fresh_loader<Generator>(
                 paths.generator, [] { return Generator(); }, device, gs::ModuleMode::train)),
             gs::Residency::primary);
  models.add(
      "discriminator",
      gs::as_module_loader(gs::checkpoint_or_fresh_loader<Discriminator>(
          paths.discriminator, [] { return Discriminator(); }, device, gs::ModuleMode::train)),
      gs::Residency::primary);
}

struct RunResult {
  int steps = 0;
  float d_loss = 0, g_loss = 0, fake_mean = 0;
};

/// Trains up to kSteps steps (fewer when a stop is requested), then saves both checkpoints.
RunResult train(gs::ModuleCache<std::string>& models, gs::BufferPool& batches,
                const gs::StopOnSignals& stop, const Paths& paths, const torch::Device& device) {
  Generator generator = gs::get_module<Generator>(models, "generator");
  Discriminator discriminator = gs::get_module<Discriminator>(models, "discriminator");
  torch::optim::Adam g_opt(generator->parameters(), torch::optim::AdamOptions(1e-2));
  torch::optim::Adam d_opt(discriminator->parameters(), torch::optim::AdamOptions(1e-2));
  const auto bce = [](const torch::Tensor& logits, float label) {
    return torch::binary_cross_entropy_with_logits(logits, torch::full_like(logits, label));
  };

  RunResult r;
  for (; r.steps < kSteps && !stop.requested(); ++r.steps) {
    // The real batch: a pooled buffer as a tensor on `device`, no allocation per step.
    torch::Tensor real = gs::as_tensor(batches.acquire(kBatch * kFeatures * sizeof(float)),
                                       {kBatch, kFeatures}, torch::kFloat);
    real.normal_(kMean, 0.5);
    // At the end of the step, whatever happens (an exception included), the batch tensor is
    // released and its buffer returns to the pool.
    gs::SafeCudaCleanup step_cleanup;
    step_cleanup.defer([&real] { gs::safe_tensor_cleanup(real); });

    // Discriminator: real -> 1, fake -> 0.
    torch::Tensor fake = generator->forward(torch::randn({kBatch, kNoise}, device));
    d_opt.zero_grad();
    torch::Tensor d_loss =
        bce(discriminator->forward(real), 1.0f) + bce(discriminator->forward(fake.detach()), 0.0f);
    d_loss.backward();
    d_opt.step();

    // Generator: make the discriminator say 1.
    g_opt.zero_grad();
    torch::Tensor g_loss = bce(discriminator->forward(fake), 1.0f);
    g_loss.backward();
    g_opt.step();

    r.d_loss = d_loss.item<float>();
    r.g_loss = g_loss.item<float>();
  }
  {
    torch::NoGradGuard no_grad;
    r.fake_mean = generator->forward(torch::randn({1024, kNoise}, device)).mean().item<float>();
  }
  gs::save_checkpoint(generator, paths.generator);
  gs::save_checkpoint(discriminator, paths.discriminator);
  return r;
}

bool same_parameters(const torch::nn::Module& a, const std::vector<torch::Tensor>& saved) {
  const auto p = a.parameters();
  if (p.size() != saved.size()) return false;
  for (std::size_t i = 0; i < p.size(); ++i)
    if (!torch::equal(p[i].cpu(), saved[i])) return false;
  return true;
}

}  // namespace

int main() {
  // SIGINT/SIGTERM now only ask the loop to stop: checkpoints are saved and main returns.
  gs::StopOnSignals stop;
  torch::manual_seed(1);
  const torch::Device device = gs::torch_device();
  std::printf("Training on %s\n", device.str().c_str());

  const std::string dir = temp_dir();
  const Paths paths{dir + "/generator.pt", dir + "/discriminator.pt"};

  // Input batches: 2 buffers on the training device (host memory on the CPU or without a GPU).
  gs::BufferPool batches(
      gs::pool_options_for(device, {{kBatch * kFeatures * sizeof(float), 2}}, "batches"));

  // Run 1: no checkpoint yet, so both models start fresh.
  std::vector<torch::Tensor> saved_generator;
  RunResult first;
  {
    gs::ModuleCache<std::string> models;
    add_models(models, paths, device);
    first = train(models, batches, stop, paths, device);
    for (const auto& p : gs::get_module<GeneratorImpl>(models, "generator")->parameters())
      saved_generator.push_back(p.detach().cpu().clone());
  }
  std::printf("run 1: %d steps, D loss %.3f, G loss %.3f, generated mean %.3f (real %.1f)\n",
              first.steps, first.d_loss, first.g_loss, first.fake_mean, kMean);

  // Run 2, as after a restart: the checkpoints exist, so both models resume from them.
  int failures = 0;
  RunResult second;
  {
    gs::ModuleCache<std::string> models;
    add_models(models, paths, device);
    Generator restored = gs::get_module<Generator>(models, "generator");
    if (!same_parameters(*restored, saved_generator)) {
      std::printf("FAILED: the restored generator is not the saved one\n");
      ++failures;
    }
    if (!restored->is_training()) {
      std::printf("FAILED: the restored generator is not in training mode\n");
      ++failures;
    }
    second = train(models, batches, stop, paths, device);
  }
  std::printf("run 2: %d steps, D loss %.3f, G loss %.3f, generated mean %.3f (real %.1f)\n",
              second.steps, second.d_loss, second.g_loss, second.fake_mean, kMean);
  if (!std::isfinite(second.d_loss) || !std::isfinite(second.g_loss)) {
    std::printf("FAILED: the losses are not finite\n");
    ++failures;
  }
  if (batches.stats().totals.in_use != 0) {
    std::printf("FAILED: %zu batch buffers still leased\n", batches.stats().totals.in_use);
    ++failures;
  }

  std::remove(paths.generator.c_str());
  std::remove(paths.discriminator.c_str());
  ::rmdir(dir.c_str());
  if (failures != 0) return 1;
  if (stop.requested()) {
    std::printf("Stopped by signal %d; checkpoints saved, exiting normally.\n", stop.signal());
  } else {
    std::printf("Trained, checkpointed, restored and trained again; exiting normally.\n");
  }
  return 0;  // not exit() from a signal handler: every cleanup runs
}
