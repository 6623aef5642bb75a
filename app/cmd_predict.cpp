// `alexnet predict`: top-k classes of image files from an exported model alone (TorchScript,
// or ONNX run by OpenCV's DNN module).
#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <stdexcept>

#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "cli/option_groups.h"
#include "data/dataset.h"
#include "data/image_decode.h"
#include "train/exported_model.h"
#include "train/precision.h"
#if ALEXNET_WITH_OPENCV_DNN
#include "train/onnx_model.h"
#endif
#include "transforms/transforms.h"

namespace alexnet::cli {
namespace {

// An image file -> [in_channels, image_size, image_size] float32, prepared as `alexnet eval`
// prepares validation images.
torch::Tensor prepare(const transforms::Transform& pipeline, const std::string& path) {
  transforms::Rng rng(0);
  return pipeline.apply(data::decode_image_file(path, /*size=*/0), rng);
}

std::string percent(double p) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f%%", 100.0 * p);
  return text;
}

// What is said about an image that could not be prepared, naming the file.
std::string failure_message(const std::exception& e, const std::string& image) {
  // Decoding errors name the file; others (e.g. a crop larger than the image) get it.
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return "'" + image + "': " + c10_error->what_without_backtrace();
  }
  if (dynamic_cast<const data::DecodeError*>(&e) == nullptr) return "'" + image + "': " + e.what();
  return e.what();
}

// {image, top: [{label, class, probability}]} of one image from its top-k probabilities
// `values` and `labels` ([k] each); `line` receives the same as one line of text.
nlohmann::json top_entry(const std::string& image, const torch::Tensor& values,
                         const torch::Tensor& labels, const std::vector<std::string>& class_names,
                         std::string& line) {
  nlohmann::json entry{{"image", image}, {"top", nlohmann::json::array()}};
  line = image + ":";
  for (int64_t r = 0; r < values.size(0); ++r) {
    const int64_t label = labels[r].item<int64_t>();
    const double p = values[r].item<double>();
    const auto index = static_cast<size_t>(label);
    const std::string name =
        index < class_names.size() ? class_names[index] : "class " + std::to_string(label);
    entry["top"].push_back({{"label", label}, {"class", name}, {"probability", p}});
    line += (r ? "  " : " ") + std::to_string(r + 1) + ". " + name + " " + percent(p);
  }
  return entry;
}

// What predict needs of an exported model, whatever its format.
struct Predictor {
  transforms::PipelineOptions pipeline;
  std::vector<std::string> class_names;
  /// [N, C, H, W] float32 -> logits [N, num_classes].
  std::function<torch::Tensor(const torch::Tensor&)> forward;
};

bool is_onnx_file(const std::string& path) {
  const std::string suffix = ".onnx";
  return path.size() >= suffix.size() &&
         path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A file ending in .onnx runs in OpenCV's DNN module, any other is TorchScript.
Predictor open_predictor(const std::string& path, train::Precision precision) {
  if (is_onnx_file(path)) {
#if ALEXNET_WITH_OPENCV_DNN
    auto onnx = std::make_shared<train::OnnxModel>(path);
    // OpenCV on as many threads as LibTorch was given (--threads).
    train::set_onnx_threads(torch::get_num_threads());
    return {onnx->pipeline_options(), onnx->metadata().info.class_names,
            [onnx](const torch::Tensor& x) { return onnx->forward(x); }};
#else
    throw std::runtime_error(
        "cannot run ONNX model '" + path +
        "': this build has no OpenCV DNN module (ALEXNET_WITH_OPENCV_DNN=OFF)");
#endif
  }
  auto model = std::make_shared<train::ExportedModel>(train::load_exported_model(path));
  return {model->pipeline_options(), model->info.class_names,
          train::exported_forward(model, precision, torch::kCPU)};
}

ArgParser predict_parser() {
  ArgParser parser("alexnet predict --model model.pt IMAGE... [options]",
                   "Prints the most likely classes of each image with their probabilities, "
                   "using only the file written by alexnet export (or alexnet train as "
                   "RUN/model.pt): its attributes say how to prepare the images. A file ending "
                   "in .onnx runs in OpenCV's DNN module, any other in LibTorch (TorchScript). "
                   "Images that cannot be read are reported and the others still predicted; "
                   "the exit status is 1 if any failed.");
  parser.option("model", "exported model: TorchScript (model.pt) or ONNX (model.onnx)")
      .option("top", "classes to print per image", "5")
      .option("batch-size", "images per forward pass", "32");
  add_threads_option(parser, /*default_value=*/"0", kThreadsHelpHardware);
  parser
      .option("precision",
              "fp32 or bf16 (autocast; fast on CPUs with avx512_bf16 or AMX, emulated in "
              "float32 on other CPUs)",
              "fp32")
      .flag("json", "print JSON: [{image, top: [{label, class, probability}]} or {image, error}]")
      .positionals("IMAGE", "image files (JPEG, PNG, ...)");
  return parser;
}

// The entries of images [begin, end) in order, {image, top} or {image, error}; counts the
// images that could not be read in `failures` and, unless `as_json`, prints each entry.
std::vector<nlohmann::json> predict_batch(const Predictor& model,
                                          const transforms::Transform& pipeline,
                                          const train::ForwardFunction& forward,
                                          const std::vector<std::string>& images, size_t begin,
                                          size_t end, int64_t top, bool as_json, int& failures) {
  std::vector<torch::Tensor> inputs;
  std::vector<size_t> which;
  std::vector<nlohmann::json> slot(end - begin);
  for (size_t i = begin; i < end; ++i) {
    try {
      inputs.push_back(prepare(pipeline, images[i]));
      which.push_back(i);
    } catch (const std::exception& e) {
      ++failures;
      const std::string message = failure_message(e, images[i]);
      slot[i - begin] = {{"image", images[i]}, {"error", message}};
      if (!as_json) std::cerr << "alexnet predict: error: " << message << "\n";
    }
  }
  if (inputs.empty()) return slot;
  const auto logits = forward(torch::stack(inputs));
  const auto probabilities = torch::softmax(logits.to(torch::kFloat64), 1);
  const int64_t k = std::min<int64_t>(top, probabilities.size(1));
  const auto [values, labels] = probabilities.topk(k, 1);
  for (size_t j = 0; j < which.size(); ++j) {
    const auto row = static_cast<int64_t>(j);
    std::string line;
    slot[which[j] - begin] =
        top_entry(images[which[j]], values[row], labels[row], model.class_names, line);
    if (!as_json) std::cout << line << "\n";
  }
  return slot;
}

int run_predict(const std::vector<std::string>& args) {
  ArgParser parser = predict_parser();
  if (!parser.parse(args)) return 0;
  require_options(parser, {"model"}, "predict");
  if (parser.positional().empty()) throw UsageError("no IMAGE given");
  const int64_t top = parser.get_int("top");
  const int64_t batch = parser.get_int("batch-size");
  if (top < 1) throw UsageError("--top must be >= 1, got " + std::to_string(top));
  if (batch < 1) throw UsageError("--batch-size must be >= 1, got " + std::to_string(batch));
  apply_threads_option(parser);
  const bool as_json = parser.get_flag("json");
  const train::Precision precision = precision_option(parser, torch::kCPU);
  if (precision != train::Precision::kFloat32 && is_onnx_file(parser.get("model"))) {
    throw UsageError("--precision " + parser.get("precision") +
                     " applies to TorchScript models; '" + parser.get("model") +
                     "' runs in float32 in OpenCV's DNN module");
  }
  if (const auto advice = train::precision_advice(precision, torch::kCPU); !advice.empty()) {
    std::cerr << advice << "\n";
  }
  const Predictor model = open_predictor(parser.get("model"), precision);
  const auto pipeline = transforms::eval_pipeline(model.pipeline, /*ten_crop=*/false);
  const auto& forward = model.forward;
  const auto& images = parser.positional();
  nlohmann::json results = nlohmann::json::array();
  int failures = 0;

  torch::NoGradGuard no_grad;
  for (size_t begin = 0; begin < images.size(); begin += static_cast<size_t>(batch)) {
    const size_t end = std::min(images.size(), begin + static_cast<size_t>(batch));
    for (auto& entry :
         predict_batch(model, *pipeline, forward, images, begin, end, top, as_json, failures)) {
      results.push_back(std::move(entry));
    }
  }
  // A file name need not be UTF-8: such bytes print as U+FFFD rather than failing the dump.
  if (as_json) {
    std::cout << results.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  if (failures > 0 && !as_json) {
    std::cerr << "alexnet predict: " << failures << " of " << images.size()
              << " images could not be read\n";
  }
  return failures > 0 ? 1 : 0;
}

const Registration kPredictRegistration{"predict", "top-5 classes of images from an exported model",
                                        run_predict};

}  // namespace
}  // namespace alexnet::cli
