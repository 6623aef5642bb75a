// `alexnet export`: a checkpoint to a self-contained TorchScript file.
#include <iostream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "model/alexnet.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/export.h"

namespace alexnet::cli {
namespace {

int run_export(const std::vector<std::string>& args) {
  ArgParser parser("alexnet export --checkpoint FILE --out model.pt [options]",
                   "Writes the model of a training checkpoint as a TorchScript file that "
                   "torch::jit::load (C++) and torch.jit.load (Python) read without this "
                   "project: forward(x) -> logits, features(x) -> fc7 activations, and the "
                   "attributes class_names, image_size, resize_size, in_channels, mean, std. "
                   "Checks that the file reproduces the checkpoint's model on a random input.");
  parser.option("checkpoint", "checkpoint written by alexnet train (e.g. RUN/checkpoints/best.pt)")
      .option("out", "TorchScript file to write", "model.pt")
      .flag("json", "print a JSON summary");
  if (!parser.parse(args)) return 0;
  if (!parser.has("checkpoint")) throw std::invalid_argument("--checkpoint FILE is required");
  const std::string checkpoint_path = parser.get("checkpoint");
  const std::string out_path = parser.get("out");

  const train::Checkpoint checkpoint = train::load_checkpoint(checkpoint_path);
  if (!checkpoint.config.is_object() || !checkpoint.config.contains("model")) {
    throw std::runtime_error("checkpoint '" + checkpoint_path +
                             "' has no model configuration (config.model)");
  }
  AlexNetOptions options = train::model_options_from_json(checkpoint.config.at("model"));
  options.devices({torch::kCPU});
  AlexNet model(options);
  model->load_single_device_state(checkpoint.model);
  model->eval();

  train::ExportInfo info;
  info.class_names = checkpoint.class_names;
  info.image_size = checkpoint.image_size;
  info.resize_size = checkpoint.resize_size;
  info.mean = checkpoint.mean;
  info.std = checkpoint.std;
  train::save_torchscript(model, info, out_path);

  // The written file against the eager model on one random image.
  torch::NoGradGuard no_grad;
  torch::jit::Module loaded = torch::jit::load(out_path);
  const auto x = torch::randn({1, options.in_channels(), info.image_size, info.image_size}) * 50.0;
  const auto expected = model->forward(x);
  const auto actual = loaded.forward({x}).toTensor();
  const double difference = (actual - expected).abs().max().item<double>();
  const double tolerance = 1e-5 * std::max(1.0, expected.abs().max().item<double>());
  if (!(difference <= tolerance)) {
    throw std::runtime_error("exported model '" + out_path +
                             "' differs from the checkpoint's model by " +
                             std::to_string(difference));
  }

  if (parser.get_flag("json")) {
    nlohmann::json out{{"checkpoint", checkpoint_path},
                       {"model", out_path},
                       {"num_classes", options.num_classes()},
                       {"in_channels", options.in_channels()},
                       {"image_size", info.image_size},
                       {"resize_size", info.resize_size},
                       {"class_names", info.class_names},
                       {"mean", info.mean},
                       {"std", info.std},
                       {"max_abs_difference", difference}};
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << "exported " << checkpoint_path << " -> " << out_path << ": "
              << options.num_classes() << " classes, input " << options.in_channels() << " x "
              << info.image_size << " x " << info.image_size << " (shorter side resized to "
              << info.resize_size << "); max difference to the checkpoint's model " << difference
              << "\n";
  }
  return 0;
}

const Registration kExportRegistration{"export", "write a checkpoint's model as a TorchScript file",
                                 run_export};

}  // namespace
}  // namespace alexnet::cli
