// `alexnet kernels`: the first layer's kernels as a picture (the paper's Figure 3).
#include <iostream>

#include "cli.h"
#include "experiments/feature_extraction.h"
#include "experiments/kernel_grid.h"
#include "train/checkpoint.h"
#include "train/exported_model.h"
#if ALEXNET_WITH_OPENCV
#include "draw/drawing.h"
#endif

namespace alexnet::cli {
namespace {

ArgParser kernels_parser() {
  ArgParser parser("alexnet kernels --model FILE | --checkpoint FILE --out PNG",
                   "Draws the conv1 kernels of an exported model as tiles, each scaled to its own "
                   "range, the first column's kernels above the second column's (the paper's "
                   "Figure 3). Grey tiles for one-channel models.");
  parser.option("model", "TorchScript model written by `alexnet export`")
      .option("checkpoint", "training checkpoint written by `alexnet train`");
  // The picture.
  parser.option("out", "PNG to write", "kernels.png")
      .option("scale", "pixels per kernel pixel", "4")
      .option("per-row", "tiles per row", "16")
      .option("blocks",
              "groups drawn one above another; 0: the model's columns (from a checkpoint), "
              "else 2 for 96 kernels and 1 otherwise",
              "0")
      .flag("sum-channels",
            "draw each kernel summed over its input channels (grey): all that a model sees of "
            "its kernels when its input channels are equal, e.g. grey images replicated to RGB");
  return parser;
}

// conv1's weight, [K, C, kh, kw], of --model or --checkpoint.
struct Conv1Weight {
  torch::Tensor weight;
  std::string path;
  int64_t columns = 0;  // the checkpoint's model columns; 0: unknown
};

Conv1Weight read_conv1_weight(const ArgParser& parser) {
  Conv1Weight conv1;
  if (parser.has("model")) {
    conv1.path = parser.get("model");
    conv1.weight = experiments::model_tensor(train::load_exported_model(conv1.path).module,
                                             "conv1.weight", conv1.path);
  } else {
    conv1.path = parser.get("checkpoint");
    const auto checkpoint = train::load_checkpoint(conv1.path);
    const auto* found = checkpoint.model.find("conv1.weight");
    TORCH_CHECK(found != nullptr, "checkpoint ", conv1.path, " has no conv1.weight");
    conv1.weight = *found;
    if (checkpoint.config.contains("model")) {
      conv1.columns = checkpoint.config["model"].value("columns", int64_t{0});
    }
  }
  TORCH_CHECK(conv1.weight.dim() == 4, conv1.path, ": conv1.weight has shape ",
              conv1.weight.sizes(), ", expected [K, C, kh, kw]");
  return conv1;
}

int run_kernels(const std::vector<std::string>& args) {
  ArgParser parser = kernels_parser();
  if (!parser.parse(args)) return 0;
  if (parser.has("model") == parser.has("checkpoint")) {
    throw UsageError("give one of --model and --checkpoint (see alexnet kernels --help)");
  }
  const Conv1Weight conv1 = read_conv1_weight(parser);
  torch::Tensor weight = conv1.weight;
  if (parser.has("sum-channels")) weight = weight.sum(1, /*keepdim=*/true);
  int64_t blocks = parser.get_int("blocks");
  if (blocks == 0) {
    blocks = conv1.columns > 0 ? conv1.columns : (weight.size(0) == 96 ? 2 : 1);
  }
  const auto options = experiments::KernelGridOptions()
                           .blocks(blocks)
                           .scale(parser.get_int("scale"))
                           .tiles_per_row(parser.get_int("per-row"));
  const auto picture = experiments::kernel_grid(weight, options);
#if ALEXNET_WITH_OPENCV
  draw::write_png(picture, parser.get("out"));
  std::cout << "wrote " << parser.get("out") << ": " << weight.size(0) << " kernels of "
            << weight.size(1) << " x " << weight.size(2) << " x " << weight.size(3) << " in "
            << blocks << (blocks == 1 ? " block" : " blocks") << ", " << picture.size(1) << " x "
            << picture.size(0) << " pixels\n";
  return 0;
#else
  (void)picture;
  throw std::runtime_error("this build has no OpenCV (ALEXNET_WITH_OPENCV=OFF): cannot write " +
                           parser.get("out"));
#endif
}

const Registration kKernelsRegistration{"kernels", "draw the first layer's kernels (Figure 3)",
                                        run_kernels};

}  // namespace
}  // namespace alexnet::cli
