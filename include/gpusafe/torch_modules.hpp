// SPDX-License-Identifier: MIT
// gpusafe/torch_modules.hpp: LibTorch models in gpusafe: loaders, checkpoints, device choice, and
// one cache for modules of several types. Included by gpusafe/torch.hpp (either may be included
// first).
//
// - ModuleMode: what a loader does with the module's train/eval mode (keep it as LibTorch leaves
//   it, or switch it to training or evaluation).
// - torch_module_loader<M>(path[, make], device, mode): a ModelCache loader for a torch::save file.
// - checkpoint_or_fresh_loader<M>(path, make_fresh, device, mode): the checkpoint when the file
//   exists, else a freshly built module; a corrupt file is an error, never "fresh".
// - save_checkpoint(module, path): torch::save through a temporary file renamed into place, so a
//   crash or a signal during the save never leaves a truncated checkpoint.
// - torchscript_loader(path, device, mode): a ModelCache loader for a TorchScript file.
// - torch_device(): the LibTorch device to use (CUDA only when gpusafe and LibTorch both say so).
// - pool_options_for(device, classes): BufferPoolOptions whose memory kind follows a torch::Device.
// - ModuleCache<Key>: a ModelCache of torch::nn::Module, holding modules of any type;
//   as_module_loader() adapts a typed loader to it, get_module<T>(cache, key) gives the module
//   back as T (a holder such as Generator, or GeneratorImpl) or throws InvalidArgument naming
//   the type it holds.
//
// Thread safety: the free functions may be called from any thread; loaders run where ModelCache
// runs them. Teardown: everything here is acquire side (it throws, loads files, may initialise
// CUDA in LibTorch): do not call it from a static destructor, at exit or in a forked child.
#ifndef GPUSAFE_TORCH_MODULES_HPP
#define GPUSAFE_TORCH_MODULES_HPP

#include <sys/stat.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/detail/torch_config.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/model_cache.hpp"
#include "gpusafe/runtime.hpp"
#include "gpusafe/torch.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// What a loader does with a module's train/eval mode once it is loaded.
enum class ModuleMode {
  keep,   ///< as LibTorch leaves it: torch::load keeps the mode the module was built with
          ///< (training, for a new torch::nn module); torch::jit::load gives the saved mode
  train,  ///< training mode (module->train()): to continue training from a checkpoint
  eval,   ///< evaluation mode (module->eval()): for inference
};

constexpr const char* to_string(ModuleMode mode) noexcept {
  switch (mode) {
    case ModuleMode::keep:
      return "keep";
    case ModuleMode::train:
      return "train";
    case ModuleMode::eval:
      return "eval";
  }
  return "?";
}

namespace detail {

template <class T, class = void>
struct HolderContained {
  using type = T;
};
template <class T>
struct HolderContained<
    T, std::enable_if_t<std::is_base_of_v<torch::nn::ModuleHolder<typename T::ContainedType>, T>>> {
  using type = typename T::ContainedType;
};

/// Keeps a parameter out of template argument deduction (get_module(cache, "literal")).
template <class T>
struct NotDeduced {
  using type = T;
};

template <class T, class = void>
struct IsModuleHolder : std::false_type {};
template <class T>
struct IsModuleHolder<
    T, std::enable_if_t<std::is_base_of_v<torch::nn::ModuleHolder<typename T::ContainedType>, T>>>
    : std::true_type {};

/// Whether `path` names something (errno other than "no such file" counts as existing, so that
/// check_readable reports the real reason).
inline bool path_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 || (errno != ENOENT && errno != ENOTDIR);
}

/// Throws LoadFailed when `path` cannot be opened for reading.
inline void check_readable(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw LoadFailed(what + ": file '" + path + "' does not exist or cannot be reached (" +
                     std::strerror(errno) + "); check the path");
  if (S_ISDIR(st.st_mode))
    throw LoadFailed(what + ": '" + path + "' is a directory; give the model file");
  std::ifstream probe(path, std::ios::binary);
  if (!probe)
    throw LoadFailed(what + ": file '" + path +
                     "' cannot be opened for reading; check permissions");
}

/// The first line of an exception's message (LibTorch appends long backtraces).
inline std::string first_line(const char* message) {
  std::string s = message ? message : "";
  const auto eol = s.find('\n');
  if (eol != std::string::npos) s.resize(eol);
  return s;
}

template <class Module>
std::shared_ptr<Module> to_shared(std::shared_ptr<Module> p) {
  return p;
}
template <class M>
std::shared_ptr<M> to_shared(const torch::nn::ModuleHolder<M>& h) {
  return h.ptr();
}

template <class Module>
void apply_mode(Module& module, ModuleMode mode) {
  if (mode == ModuleMode::train) module.train(true);
  if (mode == ModuleMode::eval) module.eval();
}

/// Builds the module with `make` (throws LoadFailed naming `what` on failure or null).
template <class Module, class Factory>
std::shared_ptr<Module> build_module(Factory& make, const std::string& what) {
  std::shared_ptr<Module> module;
  try {
    module = to_shared(make());
  } catch (const std::exception& e) {
    throw LoadFailed(what + ": building the module failed: " + first_line(e.what()));
  }
  if (!module) throw LoadFailed(what + ": the module factory returned an empty module");
  return module;
}

/// Moves the module to `device`, sets its mode, and wraps it with its bytes.
template <class Module>
Loaded<Module> finish_load(std::shared_ptr<Module> module, c10::Device device, ModuleMode mode,
                           const std::string& what) {
  try {
    module->to(device);
    apply_mode(*module, mode);
  } catch (const std::exception& e) {
    throw LoadFailed(what + ": moving the module to " + device.str() +
                     " failed: " + first_line(e.what()));
  }
  Loaded<Module> loaded;
  loaded.bytes = module_bytes(*module);
  loaded.model = std::move(module);
  return loaded;
}

/// Loads a torch::save archive at `path` into `module`; LoadFailed naming the file otherwise.
inline void load_archive(torch::nn::Module& module, const std::string& path,
                         const std::string& what) {
  check_readable(path, what);
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    module.load(archive);
  } catch (const std::exception& e) {
    throw LoadFailed(what +
                     ": the file is not a torch::save archive of this module (corrupt, "
                     "truncated, or another architecture): " +
                     first_line(e.what()));
  }
}

}  // namespace detail

/// The module type a loader for M produces: M's contained type for a holder (torch::nn::Linear ->
/// torch::nn::LinearImpl), M itself for a Module subclass.
template <class M>
using LoadedModuleType = typename detail::HolderContained<M>::type;

// ---- loaders --------------------------------------------------------------------------------

/// A ModelCache loader for a file written by torch::save(module, path). `make` builds an empty
/// module of the same architecture (returning M, a holder, or a std::shared_ptr to the module);
/// the file's parameters and buffers are loaded into it, it is moved to `device`, and its mode
/// is set as `mode` says (ModuleMode::keep, the default, leaves it as `make` built it, as
/// torch::load does; pass ModuleMode::eval for inference, ModuleMode::train to continue
/// training). Throws LoadFailed naming the file and the reason when the file is missing,
/// unreadable, corrupt or of another architecture.
///
///   cache.add("encoder", gpusafe::torch_module_loader<torch::nn::Linear>(
///       "/models/encoder.pt", [] { return torch::nn::Linear(512, 128); }, torch::kCPU,
///       gpusafe::ModuleMode::eval));
template <class M, class Factory, class = std::enable_if_t<std::is_invocable_v<Factory&>>>
std::function<Loaded<LoadedModuleType<M>>()> torch_module_loader(
    std::string path, Factory make, c10::Device device = c10::kCPU,
    ModuleMode mode = ModuleMode::keep) {
  using Module = LoadedModuleType<M>;
  static_assert(std::is_base_of_v<torch::nn::Module, Module>,
                "torch_module_loader<M>: M must be a torch::nn::Module subclass or a holder");
  return [path = std::move(path), make = std::move(make), device, mode]() mutable {
    const std::string what = "torch_module_loader('" + path + "')";
    detail::check_readable(path, what);
    std::shared_ptr<Module> module = detail::build_module<Module>(make, what);
    detail::load_archive(*module, path, what);
    return detail::finish_load(std::move(module), device, mode, what);
  };
}

/// torch_module_loader for a default-constructible module type M.
template <class M>
std::function<Loaded<LoadedModuleType<M>>()> torch_module_loader(
    std::string path, c10::Device device = c10::kCPU, ModuleMode mode = ModuleMode::keep) {
  return torch_module_loader<M>(
      std::move(path), [] { return std::make_shared<LoadedModuleType<M>>(); }, device, mode);
}

/// A ModelCache loader for training that resumes: when `path` exists, the checkpoint is loaded
/// into a module built by `make_fresh` (as torch_module_loader does); when it does not, the
/// module `make_fresh` built is used as it is (freshly initialised weights). Either way the
/// module is moved to `device` and its mode set as `mode` says (default ModuleMode::train). A
/// file that exists but cannot be read or loaded (corrupt, truncated, another architecture, a
/// directory) throws LoadFailed naming the path: it is never silently replaced by a fresh module.
///
///   auto net = gpusafe::checkpoint_or_fresh_loader<Net>("ckpt/net.pt", [] { return Net(); },
///                                                       gpusafe::torch_device())();
template <class M, class Factory, class = std::enable_if_t<std::is_invocable_v<Factory&>>>
std::function<Loaded<LoadedModuleType<M>>()> checkpoint_or_fresh_loader(
    std::string path, Factory make_fresh, c10::Device device = c10::kCPU,
    ModuleMode mode = ModuleMode::train) {
  using Module = LoadedModuleType<M>;
  static_assert(
      std::is_base_of_v<torch::nn::Module, Module>,
      "checkpoint_or_fresh_loader<M>: M must be a torch::nn::Module subclass or a holder");
  return [path = std::move(path), make = std::move(make_fresh), device, mode]() mutable {
    const std::string what = "checkpoint_or_fresh_loader('" + path + "')";
    std::shared_ptr<Module> module = detail::build_module<Module>(make, what);
    if (detail::path_exists(path)) detail::load_archive(*module, path, what);
    return detail::finish_load(std::move(module), device, mode, what);
  };
}

/// Writes `module` (a holder, a std::shared_ptr to a module, or a module) with torch::save to
/// `path` through `path + ".tmp"` renamed into place: a reader, or a restart after a crash or a
/// signal during the save, sees the old checkpoint or the new one, never half of one. Throws
/// InvalidArgument naming the path and the reason when the file cannot be written.
template <class M>
void save_checkpoint(const M& module, const std::string& path) {
  const torch::nn::Module* m = nullptr;
  if constexpr (detail::IsModuleHolder<M>::value) {
    m = module.is_empty() ? nullptr : module.ptr().get();
  } else if constexpr (std::is_base_of_v<torch::nn::Module, M>) {
    m = &module;
  } else {
    m = module.get();  // std::shared_ptr<Module>
  }
  const std::string what = "save_checkpoint('" + path + "')";
  if (m == nullptr) throw InvalidArgument(what + ": the module is empty; give a built module");
  const std::string tmp = path + ".tmp";
  try {
    torch::serialize::OutputArchive archive;
    m->save(archive);
    archive.save_to(tmp);
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    throw InvalidArgument(what + ": writing '" + tmp + "' failed: " + detail::first_line(e.what()) +
                          "; check that the directory exists and is writable");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(tmp.c_str());
    throw InvalidArgument(what + ": renaming '" + tmp + "' to '" + path + "' failed (" + reason +
                          "); check that the path is not a directory and is writable");
  }
}

/// A ModelCache loader for a TorchScript file (torch::jit::load), mapped onto `device`, its mode
/// set as `mode` says (ModuleMode::keep, the default: the mode it was saved in). Throws LoadFailed
/// naming the file and the reason when the file is missing, unreadable or not a TorchScript
/// archive.
inline std::function<Loaded<torch::jit::Module>()> torchscript_loader(
    std::string path, c10::Device device = c10::kCPU, ModuleMode mode = ModuleMode::keep) {
  return [path = std::move(path), device, mode]() -> Loaded<torch::jit::Module> {
    const std::string what = "torchscript_loader('" + path + "')";
    detail::check_readable(path, what);
    std::shared_ptr<torch::jit::Module> module;
    try {
      module = std::make_shared<torch::jit::Module>(torch::jit::load(path, device));
      detail::apply_mode(*module, mode);
    } catch (const std::exception& e) {
      throw LoadFailed(what +
                       ": the file is not a loadable TorchScript archive (corrupt, "
                       "truncated, or written by torch::save instead): " +
                       detail::first_line(e.what()));
    }
    Loaded<torch::jit::Module> loaded;
    loaded.bytes = module_bytes(*module);
    loaded.model = std::move(module);
    return loaded;
  };
}

// ---- device choice --------------------------------------------------------------------------

/// The device to run LibTorch on: CUDA device `index` when gpusafe (is_cuda_available(): built
/// with CUDA, a driver and a device, not exiting, not a forked child) and LibTorch
/// (torch::cuda::is_available()) both say CUDA is usable, the CPU otherwise. Throws
/// InvalidArgument for a negative index or one at or beyond the device count (naming the count).
/// Acquire side: it may initialise CUDA in LibTorch.
///
///   const torch::Device device = gpusafe::torch_device();
///   net->to(device);
inline c10::Device torch_device(int index = 0) {
  if (index < 0)
    throw InvalidArgument("torch_device(" + std::to_string(index) +
                          "): negative device index; give 0 or more");
  if (!is_cuda_available() || !torch::cuda::is_available()) return c10::Device(c10::kCPU);
  const int count = static_cast<int>(torch::cuda::device_count());
  if (index >= count)
    throw InvalidArgument("torch_device(" + std::to_string(index) + "): only " +
                          std::to_string(count) + " CUDA device(s) (0.." +
                          std::to_string(count - 1) + "); give a valid index");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

/// BufferPoolOptions for tensors on `device` (see as_tensor): device memory on that CUDA device
/// (an index-less CUDA device means device 0) with the host fallback on a machine without a GPU,
/// host memory for the CPU. Throws InvalidArgument for other device types.
///
///   gpusafe::BufferPool inputs(gpusafe::pool_options_for(device, {{batch_bytes, 4}}, "inputs"));
inline BufferPoolOptions pool_options_for(const c10::Device& device, std::vector<SizeClass> classes,
                                          std::string name = "pool") {
  BufferPoolOptions options;
  if (device.is_cuda()) {
    options.kind = MemoryKind::device;
    options.device = device.has_index() ? static_cast<int>(device.index()) : 0;
    options.fallback = Fallback::host;
  } else if (device.is_cpu()) {
    options.kind = MemoryKind::host;
    options.device = 0;
  } else {
    throw InvalidArgument("pool_options_for(" + device.str() + ", pool '" + name +
                          "'): gpusafe pools hold CUDA device or host memory; give torch::kCPU "
                          "or a CUDA device");
  }
  options.classes = std::move(classes);
  options.name = std::move(name);
  return options;
}

// ---- a cache of modules of several types -----------------------------------------------------

/// A ModelCache holding torch::nn modules of any type (a GAN's generator and discriminator, an
/// encoder and a ranker): handles are std::shared_ptr<torch::nn::Module>; get_module<T> gives one
/// back as its own type. Add typed loaders through as_module_loader().
template <class Key, class Hash = std::hash<Key>, class Runtime = DefaultRuntime>
using ModuleCache = BasicModelCache<Runtime, Key, torch::nn::Module, Hash>;

/// Adapts a loader of a concrete module type (torch_module_loader, checkpoint_or_fresh_loader or
/// any callable returning Loaded<SomeModule>) to a ModuleCache.
template <class Loader, class Result = std::invoke_result_t<Loader&>,
          class Module = std::remove_reference_t<decltype(*std::declval<Result&>().model)>>
std::function<Loaded<torch::nn::Module>()> as_module_loader(Loader loader) {
  static_assert(std::is_base_of_v<torch::nn::Module, Module>,
                "as_module_loader: the loader must return Loaded<M> with M a torch::nn::Module");
  return [loader = std::move(loader)]() mutable -> Loaded<torch::nn::Module> {
    auto typed = loader();
    Loaded<torch::nn::Module> loaded;
    loaded.bytes = typed.bytes;
    loaded.model = std::move(typed.model);
    return loaded;
  };
}

/// The module for `key` in a ModuleCache (loading it on a miss, as get() does), as T: for a holder
/// type (Generator, torch::nn::Linear) a holder sharing the cached module; for a module type
/// (GeneratorImpl) a std::shared_ptr<GeneratorImpl>. Throws what get() throws, and
/// InvalidArgument naming both types when the cached module is not a T.
///
///   auto generator = gpusafe::get_module<Generator>(models, "generator");
///   torch::Tensor fake = generator->forward(noise);
template <class T, class Key, class Hash, class Runtime>
auto get_module(BasicModelCache<Runtime, Key, torch::nn::Module, Hash>& cache,
                const typename detail::NotDeduced<Key>::type& key) {
  using Module = LoadedModuleType<T>;
  static_assert(std::is_base_of_v<torch::nn::Module, Module>,
                "get_module<T>: T must be a torch::nn::Module subclass or a holder");
  std::shared_ptr<torch::nn::Module> base = cache.get(key);
  std::shared_ptr<Module> typed = std::dynamic_pointer_cast<Module>(base);
  if (!typed) {
    std::string wanted;
    try {
      wanted = c10::demangle(typeid(Module).name());
    } catch (...) {
      wanted = "the requested type";
    }
    throw InvalidArgument("get_module<" + wanted + ">: the module cached under this key is a " +
                          (base ? base->name() : std::string("null module")) + ", not a " + wanted +
                          "; ask for the type its loader builds");
  }
  if constexpr (detail::IsModuleHolder<T>::value) {
    return T(std::move(typed));
  } else {
    return typed;
  }
}

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_TORCH_MODULES_HPP
