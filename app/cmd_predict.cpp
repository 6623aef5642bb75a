// `alexnet predict`: top-k classes of image files from an exported TorchScript model alone.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <thread>

#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "data/dataset.h"
#include "data/image_decode.h"
#include "transforms/transforms.h"

namespace alexnet::cli {
namespace {

// What predict reads from the exported model (train/export.h).
struct ScriptedModel {
  torch::jit::Module module;
  int64_t image_size = 0, resize_size = 0, in_channels = 0;
  std::vector<double> mean, std;
  std::vector<std::string> class_names;
};

c10::IValue attribute(const torch::jit::Module& module, const std::string& name,
                      const std::string& path) {
  if (!module.hasattr(name)) {
    throw std::runtime_error("model '" + path + "' has no attribute '" + name +
                             "' (not written by alexnet export?)");
  }
  return module.attr(name);
}

std::vector<double> double_list(const c10::IValue& value, const std::string& name,
                                const std::string& path) {
  if (!value.isList()) {
    throw std::runtime_error("model '" + path + "' attribute '" + name + "' is not a list");
  }
  std::vector<double> out;
  for (const auto& item : value.toListRef()) {
    if (!item.isDouble() && !item.isInt()) {
      throw std::runtime_error("model '" + path + "' attribute '" + name + "' holds a non-number");
    }
    out.push_back(item.isDouble() ? item.toDouble() : static_cast<double>(item.toInt()));
  }
  return out;
}

int64_t int_attribute(const torch::jit::Module& module, const std::string& name,
                      const std::string& path) {
  const auto value = attribute(module, name, path);
  if (!value.isInt()) {
    throw std::runtime_error("model '" + path + "' attribute '" + name + "' is not an int");
  }
  return value.toInt();
}

ScriptedModel load_model(const std::string& path) {
  ScriptedModel model;
  try {
    model.module = torch::jit::load(path);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot load TorchScript model '" + path +
                             "': " + e.what_without_backtrace());
  }
  model.module.eval();
  model.image_size = int_attribute(model.module, "image_size", path);
  model.resize_size = int_attribute(model.module, "resize_size", path);
  model.in_channels = int_attribute(model.module, "in_channels", path);
  model.mean = double_list(attribute(model.module, "mean", path), "mean", path);
  model.std = double_list(attribute(model.module, "std", path), "std", path);
  const auto names = attribute(model.module, "class_names", path);
  if (!names.isList()) {
    throw std::runtime_error("model '" + path + "' attribute 'class_names' is not a list");
  }
  for (const auto& name : names.toListRef()) model.class_names.push_back(name.toStringRef());
  const auto channels = static_cast<size_t>(model.in_channels);
  if ((model.in_channels != 1 && model.in_channels != 3) ||
      (!model.mean.empty() && model.mean.size() != channels) ||
      (!model.std.empty() && model.std.size() != channels) || model.image_size < 1 ||
      model.resize_size < model.image_size) {
    throw std::runtime_error("model '" + path +
                             "' has inconsistent preprocessing attributes (in_channels, mean, "
                             "std, image_size, resize_size)");
  }
  return model;
}

// An image file -> [in_channels, image_size, image_size] float32, normalised as in training:
// shorter side to resize_size, central crop, grey or colour, minus mean, divided by std.
torch::Tensor prepare(const ScriptedModel& model, const std::string& path) {
  torch::Tensor image = data::decode_image_file(path, /*size=*/0);  // [3, H, W] uint8 RGB
  transforms::Rng rng(0);
  image = transforms::ResizeShorter(model.resize_size).apply(image, rng);
  image = transforms::CenterCrop(model.image_size).apply(image, rng);
  auto x = image.to(torch::kFloat32);
  if (model.in_channels == 1) {
    // ITU-R 601 luma, as PIL's convert("L"); exact for grey images stored as RGB.
    x = (x[0] * 0.299 + x[1] * 0.587 + x[2] * 0.114).round().unsqueeze(0);
  }
  for (int64_t c = 0; c < model.in_channels; ++c) {
    const auto i = static_cast<size_t>(c);
    if (!model.mean.empty()) x[c].sub_(model.mean[i]);
    if (!model.std.empty()) x[c].div_(model.std[i]);
  }
  return x;
}

std::string percent(double p) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f%%", 100.0 * p);
  return text;
}

int run_predict(const std::vector<std::string>& args) {
  ArgParser parser("alexnet predict --model model.pt IMAGE... [options]",
                   "Prints the most likely classes of each image with their probabilities, "
                   "using only the TorchScript file written by alexnet export (or alexnet "
                   "train as RUN/model.pt): its attributes say how to prepare the images. "
                   "Images that cannot be read are reported and the others still predicted; "
                   "the exit status is 1 if any failed.");
  parser.option("model", "exported TorchScript model")
      .option("top", "classes to print per image", "5")
      .option("batch", "images per forward pass", "32")
      .option("threads", "intra-op threads (0: all hardware threads)", "0")
      .flag("json", "print JSON: [{image, top: [{label, class, probability}]} or {image, error}]")
      .positionals("IMAGE", "image files (JPEG, PNG, ...)");
  if (!parser.parse(args)) return 0;
  if (!parser.has("model")) throw std::invalid_argument("--model FILE is required");
  if (parser.positional().empty()) throw std::invalid_argument("no IMAGE given");
  const int64_t top = parser.get_int("top");
  const int64_t batch = parser.get_int("batch");
  const int64_t threads = parser.get_int("threads");
  if (top < 1) throw std::invalid_argument("--top must be >= 1, got " + std::to_string(top));
  if (batch < 1) throw std::invalid_argument("--batch must be >= 1, got " + std::to_string(batch));
  if (threads < 0) throw std::invalid_argument("--threads must be >= 0");
  torch::set_num_threads(threads > 0 ? static_cast<int>(threads)
                                     : static_cast<int>(std::thread::hardware_concurrency()));
  const bool as_json = parser.get_flag("json");

  ScriptedModel model = load_model(parser.get("model"));
  const auto& images = parser.positional();
  nlohmann::json results = nlohmann::json::array();
  int failures = 0;

  torch::NoGradGuard no_grad;
  for (size_t begin = 0; begin < images.size(); begin += static_cast<size_t>(batch)) {
    const size_t end = std::min(images.size(), begin + static_cast<size_t>(batch));
    std::vector<torch::Tensor> inputs;
    std::vector<size_t> which;
    std::vector<nlohmann::json> slot(end - begin);
    for (size_t i = begin; i < end; ++i) {
      try {
        inputs.push_back(prepare(model, images[i]));
        which.push_back(i);
      } catch (const std::exception& e) {
        ++failures;
        // Decoding errors name the file; others (e.g. a crop larger than the image) get it.
        std::string message = e.what();
        if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
          message = "'" + images[i] + "': " + c10_error->what_without_backtrace();
        } else if (dynamic_cast<const data::DecodeError*>(&e) == nullptr) {
          message = "'" + images[i] + "': " + message;
        }
        slot[i - begin] = {{"image", images[i]}, {"error", message}};
        if (!as_json) std::cerr << "alexnet predict: error: " << message << "\n";
      }
    }
    if (!inputs.empty()) {
      const auto logits = model.module.forward({torch::stack(inputs)}).toTensor();
      const auto probabilities = torch::softmax(logits.to(torch::kFloat64), 1);
      const int64_t k = std::min<int64_t>(top, probabilities.size(1));
      const auto [values, labels] = probabilities.topk(k, 1);
      for (size_t j = 0; j < which.size(); ++j) {
        const auto row = static_cast<int64_t>(j);
        nlohmann::json entry{{"image", images[which[j]]}, {"top", nlohmann::json::array()}};
        std::string line = images[which[j]] + ":";
        for (int64_t r = 0; r < k; ++r) {
          const int64_t label = labels[row][r].item<int64_t>();
          const double p = values[row][r].item<double>();
          const auto index = static_cast<size_t>(label);
          const std::string name = index < model.class_names.size()
                                       ? model.class_names[index]
                                       : "class " + std::to_string(label);
          entry["top"].push_back({{"label", label}, {"class", name}, {"probability", p}});
          line += (r ? "  " : " ") + std::to_string(r + 1) + ". " + name + " " + percent(p);
        }
        slot[which[j] - begin] = entry;
        if (!as_json) std::cout << line << "\n";
      }
    }
    for (auto& entry : slot) results.push_back(std::move(entry));
  }
  if (as_json) std::cout << results.dump(2) << "\n";
  if (failures > 0 && !as_json) {
    std::cerr << "alexnet predict: " << failures << " of " << images.size()
              << " images could not be read\n";
  }
  return failures > 0 ? 1 : 0;
}

const Registration kRegistration{"predict", "top-5 classes of images from an exported model",
                                 run_predict};

}  // namespace
}  // namespace alexnet::cli
