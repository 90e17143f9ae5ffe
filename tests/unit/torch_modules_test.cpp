// Unit tests of gpusafe/torch_modules.hpp: module modes, checkpoint-or-fresh loading, checkpoints
// saved atomically, the device choice, pool options from a device, and one cache for modules of
// several types.
#include "gpusafe/torch_modules.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace gs = gpusafe;

namespace {

/// A fresh directory under TMPDIR, removed with its files at the end of the test.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/gpusafe_tmod_XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() {
    for (const auto& f : files_) {
      std::remove(f.c_str());
      std::remove((f + ".tmp").c_str());
    }
    ::rmdir(path_.c_str());
  }
  std::string file(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

// Two module types, declared as a user would, with TORCH_MODULE holders.
struct GeneratorImpl : torch::nn::Module {
  GeneratorImpl() {
    fc = register_module("fc", torch::nn::Linear(4, 8));
    drop = register_module("drop", torch::nn::Dropout(0.5));
  }
  torch::Tensor forward(torch::Tensor z) { return torch::tanh(drop(fc(z))); }
  torch::nn::Linear fc{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(Generator);

struct DiscriminatorImpl : torch::nn::Module {
  DiscriminatorImpl() { fc = register_module("fc", torch::nn::Linear(8, 1)); }
  torch::Tensor forward(torch::Tensor x) { return torch::sigmoid(fc(x)); }
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(Discriminator);

template <class F>
std::string load_failure(F&& loader) {
  try {
    (void)loader();
  } catch (const gs::LoadFailed& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("WRONG TYPE: ") + e.what();
  }
  return "NO EXCEPTION";
}

bool same_parameters(const torch::nn::Module& a, const torch::nn::Module& b) {
  const auto pa = a.parameters();
  const auto pb = b.parameters();
  if (pa.size() != pb.size()) return false;
  for (std::size_t i = 0; i < pa.size(); ++i)
    if (!torch::equal(pa[i], pb[i])) return false;
  return true;
}

// ---- modes ----------------------------------------------------------------------------------

TEST(TorchModuleMode, LoaderKeepsTrainsOrEvaluatesAsAsked) {
  TempDir dir;
  const std::string path = dir.file("gen.pt");
  Generator saved;
  saved->eval();  // the mode is not part of a torch::save archive
  torch::save(saved, path);

  auto make = [] { return Generator(); };
  auto kept = gs::torch_module_loader<Generator>(path, make)();
  EXPECT_TRUE(kept.model->is_training()) << "keep: as built (training), like torch::load";
  EXPECT_TRUE(kept.model->fc->is_training()) << "submodules follow";
  auto trained =
      gs::torch_module_loader<Generator>(path, make, torch::kCPU, gs::ModuleMode::train)();
  EXPECT_TRUE(trained.model->is_training());
  auto evaluated =
      gs::torch_module_loader<Generator>(path, make, torch::kCPU, gs::ModuleMode::eval)();
  EXPECT_FALSE(evaluated.model->is_training());
  EXPECT_FALSE(evaluated.model->drop->is_training());
  EXPECT_TRUE(same_parameters(*evaluated.model, *saved));
  EXPECT_STREQ(gs::to_string(gs::ModuleMode::eval), "eval");
}

TEST(TorchModuleMode, TorchScriptKeepsTheSavedModeUnlessAsked) {
  TempDir dir;
  const std::string training = dir.file("training.ts");
  const std::string evaluating = dir.file("evaluating.ts");
  {
    torch::jit::Module m("Scaler");
    // torch.jit.script gives every module a `training` attribute; a module built in C++ has
    // none until it is registered (without it, is_training() is always true).
    m.register_attribute("training", c10::BoolType::get(), true);
    m.register_parameter("w", torch::full({4}, 2.0f), false);
    m.define("def forward(self, x):\n  return x * self.w\n");
    m.train(true);
    m.save(training);
    m.eval();
    m.save(evaluating);
  }
  EXPECT_TRUE(gs::torchscript_loader(training)().model->is_training());
  EXPECT_FALSE(gs::torchscript_loader(evaluating)().model->is_training());
  EXPECT_FALSE(
      gs::torchscript_loader(training, torch::kCPU, gs::ModuleMode::eval)().model->is_training());
  EXPECT_TRUE(gs::torchscript_loader(evaluating, torch::kCPU, gs::ModuleMode::train)()
                  .model->is_training());
}

// ---- checkpoint or fresh --------------------------------------------------------------------

TEST(TorchCheckpoint, PresentFileGivesTheSavedWeightsInTrainingMode) {
  TempDir dir;
  const std::string path = dir.file("gen.pt");
  Generator saved;
  gs::save_checkpoint(saved, path);
  struct stat st {};
  EXPECT_NE(::stat((path + ".tmp").c_str(), &st), 0) << "the temporary file is renamed away";

  auto loaded = gs::checkpoint_or_fresh_loader<Generator>(path, [] { return Generator(); })();
  ASSERT_NE(loaded.model, nullptr);
  EXPECT_TRUE(same_parameters(*loaded.model, *saved));
  EXPECT_TRUE(loaded.model->is_training());
  EXPECT_EQ(loaded.bytes, gs::module_bytes(saved));
}

TEST(TorchCheckpoint, AbsentFileGivesTheFreshModule) {
  TempDir dir;
  const std::string path = dir.file("none.pt");
  Generator fresh;
  auto loaded = gs::checkpoint_or_fresh_loader<Generator>(
      path, [&] { return fresh; }, torch::kCPU, gs::ModuleMode::eval)();
  EXPECT_EQ(loaded.model.get(), fresh.ptr().get()) << "the module make_fresh built, as it is";
  EXPECT_FALSE(loaded.model->is_training());
}

TEST(TorchCheckpoint, CorruptOrUnreadableFileIsATypedErrorNamingThePath) {
  TempDir dir;
  const std::string corrupt = dir.file("corrupt.pt");
  std::ofstream(corrupt, std::ios::binary) << "not an archive";
  auto make = [] { return Generator(); };
  const std::string c = load_failure(gs::checkpoint_or_fresh_loader<Generator>(corrupt, make));
  EXPECT_NE(c.find(corrupt), std::string::npos) << c;
  EXPECT_NE(c.find("not a torch::save archive"), std::string::npos) << c;

  const std::string other = dir.file("other.pt");
  gs::save_checkpoint(Discriminator(), other);  // another architecture
  const std::string o = load_failure(gs::checkpoint_or_fresh_loader<Generator>(other, make));
  EXPECT_NE(o.find(other), std::string::npos) << o;

  const std::string d = load_failure(gs::checkpoint_or_fresh_loader<Generator>(dir.path(), make));
  EXPECT_NE(d.find("is a directory"), std::string::npos) << d;

  const std::string null = load_failure(gs::checkpoint_or_fresh_loader<Generator>(
      dir.file("x.pt"), [] { return std::shared_ptr<GeneratorImpl>(); }));
  EXPECT_NE(null.find("empty module"), std::string::npos) << null;
}

TEST(TorchCheckpoint, SaveFailureNamesThePath) {
  try {
    gs::save_checkpoint(Generator(), "/nonexistent-dir/gen.pt");
    FAIL() << "no exception";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/gen.pt"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gs::save_checkpoint(Generator(nullptr), "/tmp/x.pt"), gs::InvalidArgument);
}

TEST(TorchCheckpoint, TrainingResumesFromTheSavedState) {
  TempDir dir;
  const std::string path = dir.file("resume.pt");
  auto loader = gs::checkpoint_or_fresh_loader<Generator>(path, [] { return Generator(); });
  torch::manual_seed(0);
  const torch::Tensor z = torch::randn({16, 4});
  const torch::Tensor target = torch::zeros({16, 8});
  auto step = [&](GeneratorImpl& g) {
    torch::optim::SGD opt(g.parameters(), 0.1);
    opt.zero_grad();
    g.drop->eval();  // deterministic
    auto loss = torch::mse_loss(g.fc->forward(z), target);
    loss.backward();
    opt.step();
    return loss.item<float>();
  };
  auto first = loader().model;
  const float l1 = step(*first);
  gs::save_checkpoint(first, path);
  auto resumed = loader().model;  // the saved state, not a fresh one
  EXPECT_TRUE(same_parameters(*resumed, *first));
  const float l2 = step(*resumed);
  EXPECT_LT(l2, l1);
}

// ---- device and pools -----------------------------------------------------------------------

TEST(TorchDevice, CpuUnlessGpusafeAndLibTorchBothHaveCuda) {
  const torch::Device d = gs::torch_device();
  const bool both = gs::is_cuda_available() && torch::cuda::is_available();
  EXPECT_EQ(d.is_cuda(), both);
  if (!both) {
    EXPECT_TRUE(d.is_cpu());
  }
  EXPECT_THROW((void)gs::torch_device(-1), gs::InvalidArgument);
  if (both) {
    try {
      (void)gs::torch_device(1000);
      FAIL() << "no exception";
    } catch (const gs::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("CUDA device(s)"), std::string::npos) << e.what();
    }
  } else {
    EXPECT_TRUE(gs::torch_device(1000).is_cpu()) << "no CUDA: every index means the CPU";
  }
}

TEST(TorchDevice, PoolOptionsFollowTheDevice) {
  const auto cpu = gs::pool_options_for(torch::kCPU, {{1024, 2}}, "inputs");
  EXPECT_EQ(cpu.kind, gs::MemoryKind::host);
  EXPECT_EQ(cpu.name, "inputs");
  ASSERT_EQ(cpu.classes.size(), 1u);
  EXPECT_EQ(cpu.classes[0].bytes, 1024u);

  const auto cuda1 = gs::pool_options_for(torch::Device(torch::kCUDA, 1), {{1024, 2}});
  EXPECT_EQ(cuda1.kind, gs::MemoryKind::device);
  EXPECT_EQ(cuda1.device, 1);
  EXPECT_EQ(cuda1.fallback, gs::Fallback::host);
  EXPECT_EQ(gs::pool_options_for(torch::kCUDA, {{1024, 2}}).device, 0);
  try {
    (void)gs::pool_options_for(torch::Device(torch::kMeta), {{1024, 2}}, "x");
    FAIL() << "no exception";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("meta"), std::string::npos) << e.what();
  }

  // The device the program runs on gives a pool whose tensors land where the model is.
  const torch::Device device = gs::torch_device();
  gs::BufferPool pool(gs::pool_options_for(device, {{16 * sizeof(float), 2}}, "batch"));
  torch::Tensor t = gs::as_tensor(pool.acquire(16 * sizeof(float)), {4, 4}, torch::kFloat);
  EXPECT_EQ(t.device().type(), device.type());
}

// ---- one cache, several module types ---------------------------------------------------------

TEST(TorchModuleCache, ModulesOfSeveralTypesWithTypedAccess) {
  TempDir dir;
  const std::string gen_path = dir.file("gen.pt");
  Generator saved_gen;
  gs::save_checkpoint(saved_gen, gen_path);

  gs::ModuleCache<std::string> models;
  models.add("generator", gs::as_module_loader(gs::checkpoint_or_fresh_loader<Generator>(
                              gen_path, [] { return Generator(); })));
  models.add("discriminator", gs::as_module_loader(gs::checkpoint_or_fresh_loader<Discriminator>(
                                  dir.file("disc.pt"), [] { return Discriminator(); })));

  Generator g = gs::get_module<Generator>(models, "generator");
  ASSERT_FALSE(g.is_empty());
  EXPECT_TRUE(same_parameters(*g, *saved_gen));
  std::shared_ptr<DiscriminatorImpl> d = gs::get_module<DiscriminatorImpl>(models, "discriminator");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(g.ptr().get(), gs::get_module<GeneratorImpl>(models, "generator").get())
      << "the holder shares the cached module";
  torch::Tensor score = d->forward(g->forward(torch::randn({2, 4})));
  EXPECT_EQ(score.sizes(), torch::IntArrayRef({2, 1}));
  EXPECT_EQ(models.stats().bytes_resident, gs::module_bytes(g) + gs::module_bytes(d));

  try {
    (void)gs::get_module<Discriminator>(models, "generator");
    FAIL() << "no exception";
  } catch (const gs::InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("GeneratorImpl"), std::string::npos) << m;
    EXPECT_NE(m.find("DiscriminatorImpl"), std::string::npos) << m;
  }
  EXPECT_THROW((void)gs::get_module<Generator>(models, "nope"), gs::UnknownKey);
}

}  // namespace
