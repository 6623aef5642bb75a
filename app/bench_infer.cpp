// `alexnet bench infer`: inference time of the eager C++ model against the exported
// TorchScript model (train/export.h) on the same weights and the same batch.
#include <iomanip>
#include <iostream>
#include <map>
#include <thread>

#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "bench_timing.h"
#include "cli.h"
#include "model/alexnet.h"
#include "runtime_tuning.h"
#include "train/export.h"

namespace alexnet::cli {
namespace {

int run_bench_infer(const std::vector<std::string>& args) {
  ArgParser parser("alexnet bench infer [options]",
                   "Times inference (eval mode, no gradients) of the eager C++ AlexNet and of "
                   "the TorchScript module that `export_torchscript` makes from it (or one "
                   "loaded with --model), on the same random batch. Median of the repeats.");
  parser.option("batch", "images per forward pass", "64")
      .option("image-size", "input height and width", "224")
      .option("num-classes", "output classes (ignored with --model)", "1000")
      .option("threads", "intra-op threads (0: all hardware threads)", "0")
      .option("warmup", "untimed passes first (TorchScript optimises during its first runs)", "2")
      .option("repeats", "timed passes", "5")
      .option("model", "an exported model.pt to time instead of exporting a fresh model")
      .option("lrn-script",
              "TorchScript LRN formulation to export: shifted, cumsum, "
              "avgpool3d or bandconv (export_torchscript's)",
              "bandconv")
      .option("device", "cpu or cuda:N", "cpu")
      .flag("no-lrn", "leave out local response normalisation (ignored with --model)")
      .flag("stock-runtime", "keep OpenBLAS's own kernel choice (see app/runtime_tuning.h)")
      .flag("json", "print one JSON object");
  if (!parser.parse(args)) return 0;
  if (!parser.get_flag("stock-runtime")) {
    std::vector<std::string> argv{"alexnet", "bench", "infer"};
    argv.insert(argv.end(), args.begin(), args.end());
    use_openblas_kernels_for_this_cpu(argv);
  }
  const int64_t batch = parser.get_int("batch");
  const int64_t image_size = parser.get_int("image-size");
  const int64_t warmup = parser.get_int("warmup");
  const int64_t repeats = parser.get_int("repeats");
  const int64_t threads = parser.get_int("threads");
  if (batch <= 0 || repeats <= 0 || warmup < 0 || threads < 0) {
    throw std::invalid_argument(
        "--batch and --repeats must be positive, --warmup and --threads >= 0");
  }
  torch::set_num_threads(threads > 0 ? static_cast<int>(threads)
                                     : static_cast<int>(std::thread::hardware_concurrency()));
  const torch::Device device(parser.get("device"));
  TORCH_CHECK(!device.is_cuda() || torch::cuda::is_available(), "--device ", device.str(),
              " requested but this LibTorch has no usable CUDA device");

  const std::string lrn_name = parser.get("lrn-script");
  const std::map<std::string, train::detail::LrnScript> lrn_scripts{
      {"shifted", train::detail::LrnScript::kShiftedInPlace},
      {"cumsum", train::detail::LrnScript::kCumsum},
      {"avgpool3d", train::detail::LrnScript::kAvgPool3d},
      {"bandconv", train::detail::LrnScript::kBandConv}};
  const auto found = lrn_scripts.find(lrn_name);
  if (found == lrn_scripts.end()) {
    throw std::invalid_argument("--lrn-script must be one of shifted, cumsum, avgpool3d, "
                                "bandconv; got '" + lrn_name + "'");
  }
  const auto lrn_script = found->second;

  torch::manual_seed(0);
  torch::jit::Module scripted;
  std::optional<AlexNet> eager;
  if (parser.given("model")) {
    const std::string path = parser.get("model");
    try {
      scripted = torch::jit::load(path, device);
    } catch (const c10::Error& e) {
      throw std::runtime_error("cannot load TorchScript model '" + path + "': " + e.msg());
    }
    // The eager model with the exported model's weights and options.
    const auto in_channels = scripted.attr("in_channels").toInt();
    const auto class_names = scripted.attr("class_names").toList().size();
    eager.emplace(AlexNetOptions()
                      .in_channels(in_channels)
                      .num_classes(static_cast<int64_t>(class_names))
                      .devices({device}));
    torch::OrderedDict<std::string, torch::Tensor> state;
    for (const auto& p : scripted.named_parameters()) state.insert(p.name, p.value);
    try {
      (*eager)->load_single_device_state(state);
    } catch (const c10::Error& e) {
      std::cerr << "note: the eager model keeps random weights (" << e.msg()
                << "); the timing does not depend on them\n";
    }
  } else {
    eager.emplace(AlexNetOptions()
                      .num_classes(parser.get_int("num-classes"))
                      .lrn(!parser.get_flag("no-lrn"))
                      .devices({device}));
    train::ExportInfo info;
    for (int64_t i = 0; i < (*eager)->options.num_classes(); ++i) {
      info.class_names.push_back("class_" + std::to_string(i));
    }
    info.image_size = image_size;
    info.resize_size = image_size * 256 / 224;
    info.mean = {123.68, 116.78, 103.94};
    scripted = train::detail::export_torchscript(*eager, info, lrn_script);
  }
  AlexNet& model = *eager;
  model->eval();
  scripted.eval();

  const auto x = torch::randn({batch, model->options.in_channels(), image_size, image_size},
                              torch::TensorOptions(device));
  std::function<void()> sync;
  if (device.is_cuda()) sync = [] { torch::cuda::synchronize(); };
  torch::Tensor eager_out, scripted_out;
  const double eager_s = median(time_repeats(
      [&] {
        torch::NoGradGuard no_grad;
        eager_out = model->forward(x);
      },
      warmup, repeats, sync));
  const double scripted_s = median(time_repeats(
      [&] {
        torch::NoGradGuard no_grad;
        scripted_out = scripted.forward({x}).toTensor();
      },
      warmup, repeats, sync));
  // Only meaningful when both hold the same weights (not with --model).
  const double max_diff =
      parser.given("model") ? -1.0 : (eager_out - scripted_out).abs().max().item<double>();

  if (parser.get_flag("json")) {
    nlohmann::json out{{"bench", "infer"},
                       {"batch", batch},
                       {"image_size", image_size},
                       {"device", device.str()},
                       {"threads", torch::get_num_threads()},
                       {"openblas_core", openblas_core()},
                       {"model", parser.given("model") ? parser.get("model") : "exported here"},
                       {"lrn_script", parser.given("model") ? "" : lrn_name},
                       {"eager_s", eager_s},
                       {"torchscript_s", scripted_s},
                       {"torchscript_over_eager", scripted_s / eager_s},
                       {"eager_images_per_s", batch / eager_s},
                       {"torchscript_images_per_s", batch / scripted_s},
                       {"max_abs_diff", max_diff}};
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << std::fixed << std::setprecision(3) << "infer: batch " << batch << ", "
              << image_size << "x" << image_size << ", " << device << ", "
              << torch::get_num_threads() << " threads: eager " << eager_s << " s, TorchScript "
              << scripted_s << " s (" << std::setprecision(2) << scripted_s / eager_s << "x eager)";
    if (max_diff >= 0) std::cout << ", max |difference| " << std::scientific << max_diff;
    std::cout << "\n";
  }
  return 0;
}

const BenchRegistration kRegistration{"infer", "eager model vs exported TorchScript, inference",
                                      run_bench_infer};

}  // namespace
}  // namespace alexnet::cli
