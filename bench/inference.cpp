// `alexnet bench infer`: inference time of the eager C++ model against the exported
// TorchScript model (train/export.h) and, with OpenCV's DNN module, the exported ONNX model
// (train/onnx_export.h) on the same weights and the same batch.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>
#include <optional>

#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "bench/options.h"
#include "bench/timing.h"
#include "model/alexnet.h"
#include "runtime/runtime.h"
#include "train/export.h"
#include "train/exported_model.h"
#include "train/onnx_export.h"
#if ALEXNET_WITH_OPENCV_DNN
#include "train/onnx_model.h"
#endif

namespace alexnet::bench {
namespace {

cli::ArgParser inference_parser() {
  cli::ArgParser parser("alexnet bench infer [options]",
                        "Times inference (eval mode, no gradients) of the eager C++ AlexNet, "
                        "of the TorchScript module that `export_torchscript` makes from it (or "
                        "one loaded with --model) and, where OpenCV's DNN module is built in, "
                        "of the ONNX file `save_onnx` writes from the eager model, run by "
                        "OpenCV (CPU, as many threads as LibTorch), on the same random batch. "
                        "Median of the repeats; eager and TorchScript take turns in two rounds, "
                        "each keeping its faster median.");
  add_timed_run_options(parser, "images per forward pass",
                        "untimed passes first (TorchScript optimises during its first runs)",
                        /*warmup_default=*/"2", "timed passes");
  parser.option("num-classes", "output classes (ignored with --model)", "1000");
  cli::add_threads_option(parser, /*default_value=*/"0", cli::kThreadsHelpHardware);
  parser.option("model", "an exported model.pt to time instead of exporting a fresh model");
  add_device_option(parser);
  parser.flag("no-lrn", "leave out local response normalisation (ignored with --model)")
      .flag("stock-runtime", "keep OpenBLAS's own kernel choice (see runtime/runtime.h)")
      .flag("no-onnx", "leave out the ONNX model in OpenCV's DNN module");
  add_json_flag(parser);
  return parser;
}

// The eager model and the TorchScript module that are timed against each other.
struct ModelPair {
  std::optional<AlexNet> eager;
  torch::jit::Module scripted;
  /// What the exported module says about its inputs (the ONNX export writes it too).
  train::ExportInfo info;
};

// The exported model at `path` and an eager model of its options with its weights.
ModelPair load_pair(const std::string& path, torch::Device device) {
  ModelPair pair;
  auto exported = train::load_exported_model(path, device);
  pair.scripted = exported.module;
  pair.info = exported.info;
  pair.eager.emplace(AlexNetOptions()
                         .in_channels(exported.in_channels)
                         .num_classes(exported.num_classes)
                         .devices({device}));
  torch::OrderedDict<std::string, torch::Tensor> state;
  for (const auto& p : pair.scripted.named_parameters()) state.insert(p.name, p.value);
  try {
    (*pair.eager)->load_single_device_state(state);
  } catch (const c10::Error& e) {
    std::cerr << "note: the eager model keeps random weights (" << e.msg()
              << "); the timing does not depend on them\n";
  }
  return pair;
}

// A fresh eager model and its export.
ModelPair export_pair(const cli::ArgParser& parser, int64_t image_size, torch::Device device) {
  ModelPair pair;
  pair.eager.emplace(AlexNetOptions()
                         .num_classes(parser.get_int("num-classes"))
                         .lrn(!parser.get_flag("no-lrn"))
                         .devices({device}));
  train::ExportInfo info;
  for (int64_t i = 0; i < (*pair.eager)->options.num_classes(); ++i) {
    info.class_names.push_back("class_" + std::to_string(i));
  }
  info.image_size = image_size;
  info.resize_size = image_size * 256 / 224;
  info.mean = {123.68, 116.78, 103.94};
  pair.scripted = train::export_torchscript(*pair.eager, info);
  pair.info = info;
  return pair;
}

#if ALEXNET_WITH_OPENCV_DNN
// The eager model written by save_onnx to a temporary file and read into OpenCV's DNN module
// (which keeps the network in memory; the file is removed).
train::OnnxModel onnx_model_of(AlexNet& model, train::ExportInfo info, int64_t image_size) {
  info.image_size = image_size;
  info.resize_size = std::max(info.resize_size, image_size);
  const auto path = std::filesystem::temp_directory_path() /
                    ("alexnet_bench_" + std::to_string(::getpid()) + ".onnx");
  train::save_onnx(model, info, path.string());
  try {
    train::OnnxModel onnx(path.string());
    std::filesystem::remove(path);
    return onnx;
  } catch (...) {
    std::filesystem::remove(path);
    throw;
  }
}
#endif

// Seconds per forward pass (median of the repeats) of each model, and the largest differences
// between their outputs; -1 where not measured.
struct InferenceTimes {
  double eager_s = -1.0, scripted_s = -1.0, onnx_s = -1.0;
  double max_diff = -1.0, onnx_diff = -1.0;
};

// Times the eager model, the TorchScript module and, where built and on the CPU, the ONNX file
// in OpenCV's DNN module, on one random batch.
InferenceTimes time_inference(ModelPair& pair, const TimedRun& run, torch::Device device,
                              bool same_weights, bool with_onnx) {
  AlexNet& model = *pair.eager;
  model->eval();
  pair.scripted.eval();
  const auto x =
      torch::randn({run.batch, model->options.in_channels(), run.image_size, run.image_size},
                   torch::TensorOptions(device));
  const auto sync = synchronizer(device);
  InferenceTimes times;
  torch::Tensor eager_out, scripted_out;
  // Two rounds in which the two take turns; each keeps its faster median, so that a slow
  // spell of a shared machine does not fall on one side only.
  const auto eager_pass = [&] {
    torch::NoGradGuard no_grad;
    eager_out = model->forward(x);
  };
  const auto scripted_pass = [&] {
    torch::NoGradGuard no_grad;
    scripted_out = pair.scripted.forward({x}).toTensor();
  };
  times.eager_s = times.scripted_s = std::numeric_limits<double>::infinity();
  for (int round = 0; round < 2; ++round) {
    times.eager_s = std::min(times.eager_s,
                             median(time_repeats(eager_pass, run.warmup, run.repeats, sync)));
    times.scripted_s = std::min(
        times.scripted_s, median(time_repeats(scripted_pass, run.warmup, run.repeats, sync)));
  }
  if (same_weights) times.max_diff = (eager_out - scripted_out).abs().max().item<double>();

  // The ONNX model holds the eager model's weights; OpenCV runs on the CPU.
#if ALEXNET_WITH_OPENCV_DNN
  if (with_onnx && device.is_cpu()) {
    train::set_onnx_threads(torch::get_num_threads());
    train::OnnxModel onnx = onnx_model_of(model, pair.info, run.image_size);
    torch::Tensor onnx_out;
    times.onnx_s =
        median(time_repeats([&] { onnx_out = onnx.forward(x); }, run.warmup, run.repeats));
    times.onnx_diff = (onnx_out - eager_out).abs().max().item<double>();
  }
#else
  (void)with_onnx;
#endif
  return times;
}

void print_inference(const cli::ArgParser& parser, const TimedRun& run, torch::Device device,
                     bool loaded, const InferenceTimes& t) {
  // null in JSON where not measured.
  auto measured = [](double value) {
    return value >= 0 ? nlohmann::json(value) : nlohmann::json();
  };
  const int64_t batch = run.batch;
  if (parser.get_flag("json")) {
    nlohmann::json out{
        {"bench", "infer"},
        {"batch", batch},
        {"image_size", run.image_size},
        {"device", device.str()},
        {"threads", torch::get_num_threads()},
        {"openblas_core", runtime::openblas_core()},
        {"model", loaded ? parser.get("model") : "exported here"},
        {"eager_s", t.eager_s},
        {"torchscript_s", t.scripted_s},
        {"torchscript_over_eager", t.scripted_s / t.eager_s},
        {"eager_images_per_s", batch / t.eager_s},
        {"torchscript_images_per_s", batch / t.scripted_s},
        {"max_abs_diff", t.max_diff},
        {"onnx_opencv_s", measured(t.onnx_s)},
        {"onnx_opencv_over_eager", measured(t.onnx_s >= 0 ? t.onnx_s / t.eager_s : -1.0)},
        {"onnx_opencv_images_per_s", measured(t.onnx_s >= 0 ? batch / t.onnx_s : -1.0)},
        {"onnx_opencv_max_abs_diff", measured(t.onnx_diff)}};
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::cout << std::fixed << std::setprecision(3) << "infer: batch " << batch << ", "
            << run.image_size << "x" << run.image_size << ", " << device << ", "
            << torch::get_num_threads() << " threads: eager " << t.eager_s << " s, TorchScript "
            << t.scripted_s << " s (" << std::setprecision(2) << t.scripted_s / t.eager_s
            << "x eager)";
  if (t.onnx_s >= 0) {
    std::cout << ", ONNX in OpenCV " << std::fixed << std::setprecision(3) << t.onnx_s << " s ("
              << std::setprecision(2) << t.onnx_s / t.eager_s << "x eager)";
  }
  if (t.max_diff >= 0) std::cout << ", max |difference| " << std::scientific << t.max_diff;
  if (t.onnx_diff >= 0) std::cout << " (ONNX " << std::scientific << t.onnx_diff << ")";
  std::cout << "\n";
}

}  // namespace

int run_inference(const std::vector<std::string>& args) {
  cli::ArgParser parser = inference_parser();
  if (!parser.parse(args)) return 0;
  if (!parser.get_flag("stock-runtime")) {
    std::vector<std::string> argv{"alexnet", "bench", "infer"};
    argv.insert(argv.end(), args.begin(), args.end());
    runtime::use_openblas_kernels_for_this_cpu(argv);
  }
  const TimedRun run = timed_run_options(parser);
  cli::apply_threads_option(parser);
  const torch::Device device = device_option(parser);
  const bool loaded = parser.given("model");

  torch::manual_seed(0);
  ModelPair pair = loaded ? load_pair(parser.get("model"), device)
                          : export_pair(parser, run.image_size, device);
  // The outputs are compared only where both hold the same weights (not with --model).
  const InferenceTimes times =
      time_inference(pair, run, device, /*same_weights=*/!loaded, !parser.get_flag("no-onnx"));
  print_inference(parser, run, device, loaded, times);
  return 0;
}

}  // namespace alexnet::bench
