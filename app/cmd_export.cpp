// `alexnet export`: a checkpoint to a self-contained TorchScript or ONNX file.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "cli/option_groups.h"
#include "model/alexnet.h"
#include "runtime/atomic_file.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/export.h"
#include "train/onnx_export.h"
#if ALEXNET_WITH_OPENCV_DNN
#include "train/onnx_model.h"
#endif

namespace alexnet::cli {
namespace {

// The largest difference between `actual` and `expected` logits relative to their scale
// (the largest |expected|, at least 1).
double relative_difference(const torch::Tensor& actual, const torch::Tensor& expected) {
  const double scale = std::max(1.0, expected.abs().max().item<double>());
  return (actual - expected).abs().max().item<double>() / scale;
}

// The TorchScript file's relative difference to the eager model on `x`.
double check_torchscript(AlexNet& model, const std::string& path, const std::string& out_path,
                         const torch::Tensor& x) {
  torch::jit::Module loaded = torch::jit::load(path);
  const double difference = relative_difference(loaded.forward({x}).toTensor(), model->forward(x));
  if (!(difference <= 1e-5)) {
    throw std::runtime_error("exported model '" + out_path +
                             "' differs from the checkpoint's model by " +
                             std::to_string(difference) + " of the logits' scale; not written");
  }
  return difference;
}

// Where OpenCV's DNN module is built in, the ONNX file's relative difference to the eager
// model on `x`; -1 when it cannot be run.
double check_onnx(AlexNet& model, const std::string& path, const std::string& out_path,
                  const torch::Tensor& x) {
#if ALEXNET_WITH_OPENCV_DNN
  // OpenCV computes in float32 in its own order: 1e-4 of the logits' scale, as
  // tests/test_onnx.cpp derives.
  train::OnnxModel onnx(path);
  const double difference = relative_difference(onnx.forward(x), model->forward(x));
  if (!(difference <= 1e-4)) {
    throw std::runtime_error("ONNX model '" + out_path +
                             "' run by OpenCV's DNN module differs from the checkpoint's model "
                             "by " +
                             std::to_string(difference) + " of the logits' scale; not written");
  }
  return difference;
#else
  (void)model;
  (void)path;
  (void)x;
  std::cerr << "alexnet export: this build has no OpenCV DNN module; '" << out_path
            << "' was not checked by running it\n";
  return -1.0;
#endif
}

// Refuses an output path that would destroy something: the checkpoint itself, or a file that
// is not a regular one (/dev/null, a FIFO, a folder).
void check_out_path(const std::string& checkpoint_path, const std::string& out_path) {
  std::error_code error;
  if (std::filesystem::equivalent(checkpoint_path, out_path, error)) {
    throw UsageError("--out " + out_path + " is the checkpoint itself; choose another file");
  }
  if (const std::string problem = runtime::replace_problem(out_path); !problem.empty()) {
    throw UsageError("--out " + out_path + " " + problem);
  }
}

ArgParser export_parser() {
  ArgParser parser("alexnet export --checkpoint FILE [--format torchscript|onnx] --out FILE",
                   "Writes the model of a training checkpoint as a file other programs run "
                   "without this project. torchscript (model.pt): torch::jit::load (C++) and "
                   "torch.jit.load (Python) read it: forward(x) -> logits, features(x) -> fc7 "
                   "activations, and the attributes class_names, image_size, resize_size, "
                   "in_channels, mean, std. onnx (model.onnx): an ONNX graph (opset 11) that "
                   "OpenCV's DNN module, ONNX Runtime or OpenVINO run, input [N, in_channels, "
                   "image_size, image_size] -> logits, with the same values as metadata "
                   "properties. Checks that the file reproduces the checkpoint's model on a "
                   "random input (the ONNX file by running it in OpenCV's DNN module).");
  parser.option("checkpoint", "checkpoint written by alexnet train (e.g. RUN/checkpoints/best.pt)")
      .option("format", "torchscript or onnx", "torchscript")
      .option("out", "file to write (default model.pt, or model.onnx with --format onnx)", "")
      .flag("json", "print a JSON summary");
  return parser;
}

void print_export(const std::string& checkpoint_path, const std::string& out_path,
                  const std::string& format, const AlexNetOptions& options,
                  const train::ExportInfo& info, double difference) {
  std::cout << "exported " << checkpoint_path << " -> " << out_path << " (" << format
            << "): " << options.num_classes() << " classes, input " << options.in_channels()
            << " x " << info.image_size << " x " << info.image_size << " (shorter side resized to "
            << info.resize_size << ")";
  if (difference >= 0) {
    std::cout << "; max difference to the checkpoint's model " << difference
              << " of the logits' scale"
              << (format == "onnx" ? " (run by OpenCV's DNN module)" : "");
  }
  std::cout << "\n";
}

int run_export(const std::vector<std::string>& args) {
  ArgParser parser = export_parser();
  if (!parser.parse(args)) return 0;
  require_options(parser, {"checkpoint"}, "export");
  const std::string format = parser.get("format");
  if (format != "torchscript" && format != "onnx") {
    throw std::invalid_argument("--format must be torchscript or onnx, got '" + format + "'");
  }
  const std::string checkpoint_path = parser.get("checkpoint");
  std::string out_path = parser.get("out");
  if (out_path.empty()) out_path = format == "onnx" ? "model.onnx" : "model.pt";

  check_out_path(checkpoint_path, out_path);
  const train::Checkpoint checkpoint = train::load_checkpoint(checkpoint_path);
  AlexNet model = train::model_from_checkpoint(checkpoint);
  const AlexNetOptions& options = model->options;
  const train::ExportInfo info = train::export_info(checkpoint);

  // The written file against the eager model on one random image.
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({1, options.in_channels(), info.image_size, info.image_size}) * 50.0;
  // Written beside `out_path` and checked there; a file that fails its check never takes the
  // place of an earlier one (AtomicFile removes it).
  const std::string bytes = format == "onnx" ? train::onnx_model_bytes(model, info)
                                             : train::torchscript_bytes(model, info);
  runtime::AtomicFile file(out_path);
  file.write(bytes.data(), bytes.size());
  const double difference = format == "onnx"
                                ? check_onnx(model, file.temporary_path(), out_path, x)
                                : check_torchscript(model, file.temporary_path(), out_path, x);
  file.commit();
  if (!parser.get_flag("json")) {
    print_export(checkpoint_path, out_path, format, options, info, difference);
    return 0;
  }
  nlohmann::json out{
      {"checkpoint", checkpoint_path},
      {"model", out_path},
      {"format", format},
      {"num_classes", options.num_classes()},
      {"in_channels", options.in_channels()},
      {"image_size", info.image_size},
      {"resize_size", info.resize_size},
      {"class_names", info.class_names},
      {"mean", info.mean},
      {"std", info.std},
      {"max_relative_difference", difference >= 0 ? nlohmann::json(difference) : nlohmann::json()}};
  std::cout << out.dump(2) << "\n";
  return 0;
}

const Registration kExportRegistration{
    "export", "write a checkpoint's model as a TorchScript or ONNX file", run_export};

}  // namespace
}  // namespace alexnet::cli
