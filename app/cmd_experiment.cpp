// `alexnet experiment relu-vs-tanh | ablation`: the paper's Figure 1 and its ablations, run
// with the trainer on a budget that fits a small machine.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "cli/option_groups.h"
#include "cli/stop_on_signal.h"
#include "experiments/training_experiments.h"
#include "runtime/runtime.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"
#if ALEXNET_WITH_OPENCV
#include "draw/drawing.h"
#endif

namespace alexnet::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

void declare_common(ArgParser& parser, const std::string& out, const std::string& epochs) {
  parser.option("config", "base training configuration (default: configs/fashion-mnist.json)")
      .option("data", "training data (overrides data.source)")
      .option("train-limit",
              "training images (N of the training split, every class in proportion, drawn with "
              "--seed; 0: all)",
              "10000")
      .option("epochs", "epochs per run", epochs)
      .option("seed", "random seed (the first seed of an ablation)", "0");
  add_threads_option(parser);
  parser.option("out", "output folder", out)
      .flag("reuse",
            "reuse runs whose folder holds result.json of the same configuration, and train the "
            "others again (resume an interrupted experiment)")
      .flag("overwrite", "replace run folders of an earlier experiment in --out")
      .flag("keep-checkpoints", "keep each run's checkpoints (deleted by default)")
      .option("set",
              "other configuration overrides, 'key=value' separated by ';' (as `alexnet "
              "train --set`), e.g. 'optimizer.lr=0.02;data.workers=2'; may be repeated");
}

// The base configuration: the file, the experiment's overrides, --set, then the options.
train::TrainConfig base_config(const ArgParser& parser, const std::vector<std::string>& overrides) {
  const std::string file =
      parser.has("config") ? parser.get("config") : find_config("fashion-mnist.json");
  // Every key, so that the overrides below may set keys the file leaves out.
  json j = train::to_json(train::config_from_json(train::read_json_file(file)));
  for (const auto& item : overrides) train::apply_config_overrides(j, item);
  for (const auto& item : parser.get_all("set")) train::apply_config_overrides(j, item);
  if (parser.has("data")) train::set_config_value(j, "data.source", parser.get("data"));
  train::set_config_value(j, "data.train_limit", parser.get("train-limit"));
  train::set_config_value(j, "epochs", parser.get("epochs"));
  train::set_config_value(j, "seed", parser.get("seed"));
  train::set_config_value(j, "threads", parser.get("threads"));
  // Checkpoints inside an epoch only cost time here.
  train::set_config_value(j, "checkpoint_interval", "0");
  return train::config_from_json(j);
}

// What every experiment starts from: the base configuration, its data (with the statistics
// every run shares) and the settings of the runs, whose output folder exists.
struct ExperimentSetUp {
  train::TrainConfig base;
  train::RunData data;
  experiments::ExperimentSettings settings;
};

ExperimentSetUp set_up_experiment(const ArgParser& parser,
                                  const std::vector<std::string>& overrides,
                                  const std::atomic<bool>* stop) {
  ExperimentSetUp set_up{base_config(parser, overrides), {}, {}};
  runtime::set_threads(set_up.base.threads);
  set_up.data = train::open_run_data(set_up.base.data, set_up.base.seed);
  experiments::resolve_shared_statistics(set_up.base, set_up.data, std::cerr);
  auto& settings = set_up.settings;
  settings.base = set_up.base;
  settings.out_dir = parser.get("out");
  settings.reuse = parser.get_flag("reuse");
  settings.overwrite = parser.get_flag("overwrite");
  if (settings.reuse && settings.overwrite) {
    throw UsageError("give at most one of --reuse and --overwrite");
  }
  settings.keep_checkpoints = parser.get_flag("keep-checkpoints");
  settings.log = &std::cerr;
  settings.stop = stop;
  fs::create_directories(settings.out_dir);
  return set_up;
}

std::string fixed(double value, int decimals) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << value;
  return out.str();
}

#if ALEXNET_WITH_OPENCV
torch::Tensor activation_picture(const experiments::ActivationComparison& result) {
  auto series = [](const std::string& name, const std::vector<experiments::CurvePoint>& curve,
                   bool seconds) {
    draw::Series s;
    s.name = name;
    for (const auto& p : curve) {
      s.x.push_back(seconds ? p.elapsed_s / 60.0 : p.epoch);
      s.y.push_back(p.train_top1_error);
    }
    return s;
  };
  draw::ChartOptions options;
  options.y_label = "training top-1 error (%)";
  options.y_tick_scale = 100;
  options.y_min = 0;
  options.y_max = 1;
  options.reference_lines = {{result.target, "target " + fixed(100 * result.target, 0) + "%"}};
  options.title = "training error against epochs";
  options.x_label = "epochs";
  const auto by_epoch = draw::line_chart(
      {series("ReLU", result.relu_curve, false), series("tanh", result.tanh_curve, false)},
      options);
  options.title = "training error against wall time";
  options.x_label = "minutes";
  const auto by_time = draw::line_chart(
      {series("ReLU", result.relu_curve, true), series("tanh", result.tanh_curve, true)}, options);
  return draw::side_by_side({by_epoch, by_time});
}
#endif

int run_relu_vs_tanh(const ArgParser& parser, const std::vector<std::string>& overrides,
                     const std::atomic<bool>* stop) {
  const double target = parser.get_double("target-error");
  const auto [base, data, settings] = set_up_experiment(parser, overrides, stop);
  const auto result =
      experiments::compare_activations(settings, data, target, parser.get_int("window"));

  json out = result.to_json();
  out["base_config"] = train::to_json(base);
  const std::string json_path = settings.out_dir + "/relu-vs-tanh.json";
  runtime::write_file_atomically(json_path, out.dump(2) + "\n");

  auto reached_text = [&](const std::optional<experiments::CurvePoint>& p) {
    if (!p) return std::string("never reached");
    return "reached at epoch " + fixed(p->epoch, 2) + " (step " + std::to_string(p->step) + ", " +
           fixed(p->elapsed_s, 0) + " s)";
  };
  std::cout << "target training error " << fixed(100 * target, 1) << "% (mean of " << result.window
            << " log intervals)\n"
            << "  ReLU: " << reached_text(result.relu_reached) << "; final train error "
            << fixed(100 * result.relu.final_train_top1_error, 2) << "%, "
            << fixed(result.relu.seconds, 0) << " s\n"
            << "  tanh: " << reached_text(result.tanh_reached) << "; final train error "
            << fixed(100 * result.tanh.final_train_top1_error, 2) << "%, "
            << fixed(result.tanh.seconds, 0) << " s\n";
  if (result.speedup_epochs) {
    std::cout << "ReLU reached the target " << fixed(*result.speedup_epochs, 2)
              << " times faster in epochs, " << fixed(*result.speedup_seconds, 2)
              << " times faster in wall time\n";
  } else if (result.relu_reached) {
    std::cout << "ReLU reached the target; tanh did not within the budget (speed-up > "
              << fixed(result.tanh_curve.empty()
                           ? 0.0
                           : result.tanh_curve.back().epoch / result.relu_reached->epoch,
                       2)
              << "x in epochs)\n";
  } else {
    std::cout << "ReLU did not reach the target within the budget: give more --epochs or a "
                 "higher --target-error\n";
  }
  std::cout << "wrote " << json_path << "\n";
#if ALEXNET_WITH_OPENCV
  const std::string png = settings.out_dir + "/relu-vs-tanh.png";
  draw::write_png(activation_picture(result), png);
  std::cout << "wrote " << png << "\n";
#endif
  return 0;
}

int run_ablation(const ArgParser& parser, const std::vector<std::string>& overrides,
                 const std::atomic<bool>* stop) {
  const auto [base, data, settings] = set_up_experiment(parser, overrides, stop);

  auto variants = experiments::ablation_variants();
  // The full model includes the paper's PCA lighting, whatever the base configuration says.
  const auto full_pca = [](train::TrainConfig& c) { c.data.pca_lighting = true; };
  if (parser.has("variants")) {
    std::vector<experiments::AblationVariant> chosen;
    for (const auto& name : split(parser.get("variants"))) {
      bool found = false;
      for (const auto& v : variants) {
        if (v.name == name) {
          chosen.push_back(v);
          found = true;
        }
      }
      if (!found) {
        std::string names;
        for (const auto& v : variants) names += (names.empty() ? "" : ", ") + v.name;
        throw std::invalid_argument("--variants: unknown variant '" + name +
                                    "' (allowed: " + names + ")");
      }
    }
    variants = chosen;
  }
  for (auto& v : variants) {
    auto change = v.apply;
    v.apply = [full_pca, change](train::TrainConfig& c) {
      full_pca(c);
      change(c);
    };
  }
  const auto runs = experiments::run_ablation(settings, data, variants, parser.get_int("seeds"));
  const auto rows = experiments::summarise_ablation(variants, runs);
  const std::string table = experiments::ablation_markdown(rows);
  json out{{"base_config", train::to_json(base)},
           {"train_images", data.train->size()},
           {"val_images", data.val ? data.val->size() : 0},
           {"seeds", parser.get_int("seeds")},
           {"rows", experiments::ablation_json(rows)}};
  runtime::write_file_atomically(settings.out_dir + "/ablation.json", out.dump(2) + "\n");
  runtime::write_file_atomically(settings.out_dir + "/ablation.md", table);
  std::cout << table << "wrote " << settings.out_dir << "/ablation.md and ablation.json\n";
  return 0;
}

ArgParser relu_vs_tanh_parser() {
  ArgParser parser("alexnet experiment relu-vs-tanh [options]",
                   "Trains the same net twice, with ReLU and with tanh (same data, seed and "
                   "budget), records training error against epochs and wall time "
                   "(OUT/relu/metrics.jsonl, OUT/tanh/metrics.jsonl), plots both "
                   "(OUT/relu-vs-tanh.png) and reports how many times faster ReLU reaches the "
                   "target training error (the paper's Figure 1).");
  declare_common(parser, "runs/relu-vs-tanh", "2");
  parser.option("target-error", "target training top-1 error (0..1)", "0.25")
      .option("log-interval", "steps per point of the training curves", "10")
      .option("window", "log intervals averaged when testing the target", "3");
  return parser;
}

ArgParser ablation_parser() {
  ArgParser parser("alexnet experiment ablation [options]",
                   "Trains the full model (LRN, 3/2 pooling, two columns, PCA lighting, "
                   "dropout) and one change at a time (no-lrn, pool-2x2, one-column, no-pca, "
                   "no-dropout; depth: no-conv3, no-conv4, no-conv5, extra-conv; breadth: "
                   "width-0.5, width-2), each with several seeds, on the same data and budget; "
                   "writes "
                   "OUT/ablation.md and OUT/ablation.json with the final validation top-1/top-5 "
                   "error, mean and spread.");
  declare_common(parser, "runs/ablation", "1");
  parser.option("seeds", "seeds per variant", "2")
      .option("variants", "comma-separated subset of the variants (default: all)");
  return parser;
}

// Parses the arguments after the experiment's name (`args` starts with the name); false when
// they asked for the help, which is then printed.
bool parse_experiment(ArgParser& parser, const std::vector<std::string>& args) {
  if (!parser.parse({args.begin() + 1, args.end()})) return false;
  runtime::tune_runtime({"experiment"}, args);
  return true;
}

// Runs `experiment`; Ctrl-C or SIGTERM stops it after the current step with the run's
// checkpoint written, exiting 130 or 143.
int run_stoppable(const std::function<int(const std::atomic<bool>* stop)>& experiment) {
  const StopOnSignal stop;
  try {
    return experiment(stop.flag());
  } catch (const experiments::ExperimentStopped& e) {
    std::cerr << "alexnet experiment: " << stop.name() << ": " << e.what() << "\n";
    return stop.exit_code();
  }
}

int run_experiment(const std::vector<std::string>& args) {
  const std::string which = args.empty() ? "" : args[0];
  if (which == "relu-vs-tanh") {
    ArgParser parser = relu_vs_tanh_parser();
    if (!parse_experiment(parser, args)) return 0;
    return run_stoppable([&](const std::atomic<bool>* stop) {
      return run_relu_vs_tanh(parser, {"log_interval=" + parser.get("log-interval")}, stop);
    });
  }
  if (which == "ablation") {
    ArgParser parser = ablation_parser();
    if (!parse_experiment(parser, args)) return 0;
    return run_stoppable(
        [&](const std::atomic<bool>* stop) { return run_ablation(parser, {}, stop); });
  }
  std::cout << "usage: alexnet experiment relu-vs-tanh|ablation [options]\n\n"
               "  relu-vs-tanh  ReLU against tanh: training error curves and speed-up (Figure 1)\n"
               "  ablation      the full model against one change at a time (LRN, pooling,\n"
               "                columns, PCA lighting, dropout, depth, width)\n\n"
               "Run `alexnet experiment NAME --help` for the options.\n";
  return which == "--help" || which == "-h" || which == "help" ? 0 : 2;
}

const Registration kExperimentRegistration{
    "experiment", "the paper's experiments: relu-vs-tanh, ablation", run_experiment};

}  // namespace
}  // namespace alexnet::cli
