// `alexnet bench lrn`: forward + backward of the fused LRN against torch's
// local_response_norm and against a clone() of the same tensor (the memory-traffic floor).
#include <iomanip>
#include <iostream>

#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "bench/options.h"
#include "bench/timing.h"
#include "model/lrn.h"

namespace alexnet::bench {
namespace {

cli::ArgParser lrn_parser() {
  cli::ArgParser parser(
      "alexnet bench lrn [options]",
      "Times forward + backward of the fused LocalResponseNorm (the paper's "
      "constants: n 5, alpha 1e-4, beta 0.75, k 2) on an [N, C, S, S] float tensor, "
      "torch::nn::functional::local_response_norm with the same constants "
      "(alpha * n), and clone() of the tensor. Median of the repeats.");
  parser.option("batch-size", "N", "64")
      .option("channels", "C", "96")
      .option("size", "S (height and width)", "55");
  cli::add_threads_option(parser, /*default_value=*/"0", cli::kThreadsHelpHardware);
  parser.option("repeats", "timed repeats of each measurement", "5")
      .option("torch-repeats", "timed repeats of torch's op (slow)", "3");
  add_device_option(parser);
  parser.flag("forward-only", "time only the forward pass (no gradients)");
  add_json_flag(parser);
  return parser;
}

}  // namespace

int run_lrn(const std::vector<std::string>& args) {
  cli::ArgParser parser = lrn_parser();
  if (!parser.parse(args)) return 0;
  const int64_t batch = cli::int_option(parser, "batch-size", /*minimum=*/1);
  const int64_t channels = cli::int_option(parser, "channels", /*minimum=*/1);
  const int64_t size = cli::int_option(parser, "size", /*minimum=*/1);
  const int64_t repeats = cli::int_option(parser, "repeats", /*minimum=*/1);
  const int64_t torch_repeats = cli::int_option(parser, "torch-repeats", /*minimum=*/1);
  cli::apply_threads_option(parser);
  const torch::Device device = device_option(parser);
  const bool forward_only = parser.get_flag("forward-only");

  torch::manual_seed(0);
  const auto opts = torch::TensorOptions().device(device);
  // ReLU outputs of a plausible scale: non-negative, with the normalisation well engaged.
  const auto x = torch::relu(torch::randn({batch, channels, size, size}, opts) * 20.0);
  const auto grad = torch::randn_like(x);
  const auto ours_options = LocalResponseNormOptions(5).alpha(1e-4).beta(0.75).k(2.0);
  namespace F = torch::nn::functional;
  const auto torch_options = F::LocalResponseNormFuncOptions(5).alpha(5e-4).beta(0.75).k(2.0);

  const auto sync = synchronizer(device);
  auto fwd_bwd = [&](const std::function<torch::Tensor(const torch::Tensor&)>& op) {
    return [&, op] {
      if (forward_only) {
        torch::NoGradGuard no_grad;
        op(x);
        return;
      }
      const auto leaf = x.detach().requires_grad_(true);
      const auto y = op(leaf);
      torch::autograd::grad({y}, {leaf}, {grad});
    };
  };
  const auto ours = median(time_repeats(
      fwd_bwd([&](const torch::Tensor& t) { return local_response_norm(t, ours_options); }),
      /*warmup=*/1, repeats, sync));
  const auto reference = median(time_repeats(
      fwd_bwd([&](const torch::Tensor& t) { return F::local_response_norm(t, torch_options); }),
      /*warmup=*/1, torch_repeats, sync));
  const auto clone = median(time_repeats([&] { x.clone(); }, /*warmup=*/1, repeats, sync));

  const std::string what = forward_only ? "forward" : "forward+backward";
  if (parser.get_flag("json")) {
    nlohmann::json out{{"bench", "lrn"},
                       {"pass", what},
                       {"shape", x.sizes().vec()},
                       {"device", device.str()},
                       {"threads", torch::get_num_threads()},
                       {"ours_s", ours},
                       {"torch_s", reference},
                       {"clone_s", clone},
                       {"speedup_vs_torch", reference / ours},
                       {"ratio_to_clone", ours / clone}};
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << std::fixed << std::setprecision(4) << "lrn " << what << " " << x.sizes() << " on "
              << device << ", " << torch::get_num_threads() << " threads: ours " << ours
              << " s, torch " << reference << " s (" << std::setprecision(1) << reference / ours
              << "x faster), clone " << std::setprecision(4) << clone
              << " s (ours = " << std::setprecision(2) << ours / clone << "x clone)\n";
  }
  return 0;
}

}  // namespace alexnet::bench
