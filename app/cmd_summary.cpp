// `alexnet summary`: the layer table for one 224x224 image.
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "model/alexnet.h"

namespace alexnet::cli {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? " x " : "") << shape[i];
  return out.str();
}

std::string with_thousands(int64_t value) {
  std::string digits = std::to_string(value);
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) digits.insert(i, ",");
  return digits;
}

ArgParser summary_parser() {
  ArgParser parser("alexnet summary [options]",
                   "Prints each layer's output shape, parameter count and device for one "
                   "input image, and the total parameter count.");
  parser.option("num-classes", "number of output classes", "1000")
      .option("in-channels", "image channels", "3")
      .option("image-size", "input height and width", "224")
      .option("devices", "cpu, cuda:0, or two devices for the column split (cpu,cpu)", "cpu");
  // The variants of the paper's architecture.
  parser.option("columns", "2: the paper's two columns; 1: one column of half width", "2")
      .option("width", "multiplies every layer's width but fc8's (0.5: half as broad)", "1")
      .option("remove-conv", "leave out conv3, conv4 or conv5", "")
      .option("extra-conv", "add a copy of conv3, conv4 or conv5 after it", "")
      .flag("no-lrn", "leave out local response normalisation");
  parser.flag("json", "print JSON: {total_params, layers: [{name, output_shape, params, device}]}");
  return parser;
}

AlexNetOptions model_options(const ArgParser& parser) {
  return AlexNetOptions()
      .num_classes(parser.get_int("num-classes"))
      .in_channels(parser.get_int("in-channels"))
      .columns(parser.get_int("columns"))
      .lrn(!parser.get_flag("no-lrn"))
      .width(parser.get_double("width"))
      .remove_conv(parser.get("remove-conv"))
      .extra_conv(parser.get("extra-conv"))
      .devices(parse_devices(parser.get("devices")));
}

void print_layer_table(const std::vector<LayerInfo>& layers, int64_t in_channels,
                       int64_t image_size, int64_t total) {
  std::cout << "AlexNet, input " << in_channels << " x " << image_size << " x " << image_size
            << "\n\n";
  int name_w = 16;  // wider for names such as column0.conv5_extra
  for (const auto& layer : layers) {
    name_w = std::max(name_w, static_cast<int>(layer.name.size()) + 2);
  }
  const std::string rule(static_cast<size_t>(name_w) + 42, '-');
  std::cout << std::left << std::setw(name_w) << "layer" << std::setw(20) << "output" << std::right
            << std::setw(14) << "params"
            << "  device\n"
            << rule << "\n";
  for (const auto& layer : layers) {
    std::cout << std::left << std::setw(name_w) << layer.name << std::setw(20)
              << shape_text(layer.output_shape) << std::right << std::setw(14)
              << (layer.params ? with_thousands(layer.params) : "-") << "  " << layer.device
              << "\n";
  }
  std::cout << rule << "\n"
            << std::left << std::setw(name_w + 20) << "total" << std::right << std::setw(14)
            << with_thousands(total) << "\n";
}

int run_summary(const std::vector<std::string>& args) {
  ArgParser parser = summary_parser();
  if (!parser.parse(args)) return 0;

  const AlexNetOptions options = model_options(parser);
  AlexNet model(options);
  const int64_t image_size = parser.get_int("image-size");
  const auto layers = model->layer_summary(image_size);
  int64_t total = 0;
  for (const auto& p : model->parameters()) total += p.numel();

  if (!parser.get_flag("json")) {
    print_layer_table(layers, options.in_channels(), image_size, total);
    return 0;
  }
  nlohmann::json out;
  out["input_shape"] = {options.in_channels(), image_size, image_size};
  out["total_params"] = total;
  out["layers"] = nlohmann::json::array();
  for (const auto& layer : layers) {
    out["layers"].push_back({{"name", layer.name},
                             {"output_shape", layer.output_shape},
                             {"params", layer.params},
                             {"device", layer.device}});
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}

const Registration kSummaryRegistration{"summary", "print the layer table and parameter count",
                                        run_summary};

}  // namespace
}  // namespace alexnet::cli
