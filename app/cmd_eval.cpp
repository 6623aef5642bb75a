// `alexnet eval`: top-1 / top-5 error of a checkpoint or an exported model on a data set.
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "cli/option_groups.h"
#include "data/dataset.h"
#include "data/labels_file.h"
#include "data/loader.h"
#include "runtime/atomic_file.h"
#include "runtime/runtime.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/exported_model.h"
#include "train/metrics.h"
#include "train/precision.h"
#include "transforms/transforms.h"

#if ALEXNET_WITH_OPENCV
#include <opencv2/imgcodecs.hpp>

#include "draw/confusion_matrix.h"
#include "draw/drawing.h"
#endif

namespace alexnet::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// What evaluation needs from a model, whichever file it came from.
struct LoadedModel {
  /// Logits in the --precision asked for, float32.
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  /// The preprocessing the model was trained with (evaluation pipeline).
  transforms::PipelineOptions pipeline;
  std::string default_data;
  /// Class names by output index; empty where the file holds none.
  std::vector<std::string> class_names;
  int64_t num_classes = 0;
  /// The file it was read from.
  std::string path;
};

LoadedModel load_torchscript(const std::string& path, torch::Device device,
                             train::Precision precision) {
  auto exported = std::make_shared<train::ExportedModel>(train::load_exported_model(path, device));
  LoadedModel model;
  model.pipeline = exported->pipeline_options();
  model.forward = train::exported_forward(exported, precision, device);
  model.default_data = "fashion-mnist";
  model.class_names = exported->info.class_names;
  model.num_classes = exported->num_classes;
  model.path = path;
  return model;
}

LoadedModel load_checkpoint_model(const std::string& path, torch::Device device,
                                  train::Precision precision) {
  const train::Checkpoint checkpoint = train::load_checkpoint(path);
  auto net = train::model_from_checkpoint(checkpoint, device);
  LoadedModel model;
  model.pipeline =
      train::export_pipeline_options(train::export_info(checkpoint), net->options.in_channels());
  model.forward = train::forward_in_precision(
      [net](const torch::Tensor& x) mutable { return net->forward(x); }, device, precision);
  model.default_data = checkpoint.config.value("data", json::object()).value("source", "");
  model.class_names = checkpoint.class_names;
  model.num_classes = net->options.num_classes();
  model.path = path;
  return model;
}

// Writes the first `count` images of `dataset` as DIR/<index>_<class>.png.
void save_images(const data::Dataset& dataset, size_t count, const std::string& dir) {
#if ALEXNET_WITH_OPENCV
  fs::create_directories(dir);
  for (size_t i = 0; i < std::min(count, dataset.size()); ++i) {
    const auto sample = dataset.get(i);
    auto hwc = sample.image.permute({1, 2, 0}).flip({2}).contiguous();  // RGB -> BGR
    cv::Mat image(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3,
                  hwc.data_ptr<uint8_t>());
    std::string name = dataset.class_names().at(static_cast<size_t>(sample.label));
    for (char& c : name) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '-';
    }
    const std::string path = (fs::path(dir) / (std::to_string(i) + "_" + name + ".png")).string();
    // Encoded here and written whole: cv::imwrite reports success on a full disk.
    std::vector<uchar> png;
    if (!cv::imencode(".png", image, png)) {
      throw std::runtime_error("cannot encode image '" + path + "' as PNG");
    }
    runtime::write_file_atomically(path, std::string(png.begin(), png.end()));
    std::cerr << "wrote " << path << "\n";
  }
#else
  (void)dataset;
  (void)count;
  throw std::runtime_error("--save-images needs a build with OpenCV (cannot write " + dir + ")");
#endif
}

// `dataset` labelled as `model`'s outputs: its own labels where its class names are the
// model's, mapped by name with --match-classes-by-name; otherwise refused, naming the classes.
data::DatasetPtr labels_for_model(const ArgParser& parser, data::DatasetPtr dataset,
                                  const std::string& source, const LoadedModel& model) {
  const auto& classes = dataset->class_names();
  if (model.class_names.empty()) {
    TORCH_CHECK(static_cast<int64_t>(classes.size()) <= model.num_classes, "--data ", source,
                " has ", classes.size(), " classes but the model ", model.path, " has ",
                model.num_classes, " outputs and no class names to match them by");
    return dataset;
  }
  const std::string difference = data::describe_class_difference(classes, model.class_names);
  if (difference.empty()) return dataset;
  if (!parser.get_flag("match-classes-by-name")) {
    throw std::invalid_argument("--data " + source + " does not have the classes of the model " +
                                model.path + ": " + difference +
                                ". Scoring it would compare images with other classes' outputs; "
                                "--match-classes-by-name maps the data's classes to the "
                                "model's by name");
  }
  try {
    return data::relabel_by_name(std::move(dataset), model.class_names);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("--data " + source + " cannot be scored by the model " +
                                model.path + ": " + e.what());
  }
}

// Writes the confusion matrix (--confusion-png) and the most confident mistakes as a grid
// of tiles labelled true class, predicted class and probability (--errors-png).
void write_eval_pictures(const ArgParser& parser, const train::EvalResult& result,
                         const std::vector<train::Mistake>& mistakes,
                         const data::Dataset& dataset) {
  if (!parser.has("confusion-png") && !parser.has("errors-png")) return;
#if ALEXNET_WITH_OPENCV
  const auto& names = dataset.class_names();
  if (parser.has("confusion-png")) {
    draw::write_png(draw::confusion_matrix_picture(result.confusion, names),
                    parser.get("confusion-png"));
    std::cerr << "wrote " << parser.get("confusion-png") << "\n";
  }
  if (parser.has("errors-png")) {
    if (mistakes.empty()) {
      std::cerr << "no mistakes to draw: " << parser.get("errors-png") << " not written\n";
      return;
    }
    constexpr size_t kPerRow = 8;
    std::vector<std::vector<draw::Tile>> rows;
    for (size_t i = 0; i < mistakes.size(); ++i) {
      const auto& m = mistakes[i];
      if (i % kPerRow == 0) rows.emplace_back();
      std::ostringstream probability;
      probability << std::fixed << std::setprecision(1) << 100 * m.probability << "%";
      rows.back().push_back(
          draw::Tile{dataset.get(static_cast<size_t>(m.index)).image,
                     {"true " + names.at(static_cast<size_t>(m.label)),
                      "pred " + names.at(static_cast<size_t>(m.predicted)), probability.str()},
                     std::nullopt});
    }
    draw::TileGridOptions options;
    options.lines = 3;
    options.first_apart = false;
    draw::write_png(draw::tile_grid(rows, options), parser.get("errors-png"));
    std::cerr << "wrote " << parser.get("errors-png") << "\n";
  }
#else
  (void)result;
  (void)mistakes;
  (void)dataset;
  throw std::runtime_error("--confusion-png and --errors-png need a build with OpenCV");
#endif
}

// The flat image folder `source` labelled by --labels, with the model's classes.
data::DatasetPtr open_labelled_eval_data(const ArgParser& parser, const std::string& source,
                                         const LoadedModel& model) {
  if (model.class_names.empty()) {
    throw std::invalid_argument("--labels " + parser.get("labels") +
                                " names classes, but the model " + model.path +
                                " has no class names to match them to");
  }
  data::LabelledFolderOptions options;
  options.format = data::parse_labels_format(parser.get("labels-format"));
  if (parser.has("synsets")) options.synsets_file = parser.get("synsets");
  options.image_size = model.pipeline.resize;
  return data::open_labelled_folder(source, parser.get("labels"), model.class_names, options);
}

// The --split of `source` labelled as the model's outputs, or the flat folder `source`
// labelled by --labels (--limit images of it, every class in proportion, drawn with --seed),
// decoded for a shorter side of the model's resize; writes the first of them with
// --save-images.
data::DatasetPtr open_eval_data(const ArgParser& parser, const std::string& source,
                                const LoadedModel& model) {
  data::DatasetOptions data_options;
  data_options.split = parser.get("split");
  data_options.image_size = model.pipeline.resize;
  data::DatasetPtr dataset =
      parser.has("labels")
          ? open_labelled_eval_data(parser, source, model)
          : labels_for_model(parser, data::open_dataset(source, data_options), source, model);
  dataset = subset_option(parser, std::move(dataset));
  if (parser.has("save-images")) {
    save_images(*dataset, static_cast<size_t>(parser.get_int("save-count")),
                parser.get("save-images"));
  }
  return dataset;
}

ArgParser eval_parser() {
  ArgParser parser(
      "alexnet eval (--model FILE.pt | --checkpoint FILE) [--data SRC] [options]",
      "Top-1 and top-5 error on a validation set, with the centre crop or the paper's ten "
      "crops (softmax averaged over the four corners, the centre and their mirrors). "
      "--model reads an exported TorchScript file and its preprocessing attributes; "
      "--checkpoint a training checkpoint.");
  parser.option("model", "exported TorchScript model (alexnet export, or RUN_DIR/model.pt)")
      .option("checkpoint", "training checkpoint (RUN_DIR/checkpoints/best.pt)")
      .option("data",
              "image folder, packed file, IDX folder or fashion-mnist (default: the "
              "checkpoint's training source, or fashion-mnist)")
      .option("split", "train or val (test)", "val")
      .option("labels",
              "--data is one flat folder of images labelled by this file: FILENAME CLASS lines "
              "(CLASS a class name or an index into the model's classes), Kaggle's "
              "LOC_val_solution.csv, or the devkit's ILSVRC2012_validation_ground_truth.txt "
              "with --synsets")
      .option("labels-format", "form of --labels: auto, list, kaggle or devkit", "auto")
      .option("synsets",
              "devkit form: the synsets in ILSVRC ID order, one per line (first word of each)")
      .option("precision",
              "fp32, bf16 (autocast; fast on CPUs with avx512_bf16 or AMX, emulated in float32 "
              "on other CPUs) or fp16 (CUDA)",
              "fp32");
  add_subset_options(parser);
  parser.option("batch-size", "images per batch", "100")
      .option("workers", "data loading threads", "2");
  add_threads_option(parser);
  parser.option("devices", "cpu or cuda:N", "cpu");
  // What is written besides the result.
  parser
      .option("save-images",
              "also write the first --save-count images (before preprocessing) "
              "as PNG files to this folder, named INDEX_CLASS.png")
      .option("save-count", "images for --save-images", "8")
      .option("confusion-png", "draw the confusion matrix (rows: true class) into this PNG")
      .option("save-errors", "keep the N most confident mistakes for --errors-png", "0")
      .option("errors-png", "draw the --save-errors mistakes as a grid into this PNG");
  parser.flag("ten-crop", "average the softmax over the paper's ten crops")
      .flag("match-classes-by-name",
            "score data whose classes differ from the model's: each class is matched to the "
            "model's class of the same name (every class of the data must be one of the model's)")
      .flag("json", "print the result as JSON");
  return parser;
}

// The one device of --devices.
torch::Device eval_device(const ArgParser& parser) {
  const auto devices = parse_devices(parser.get("devices"));
  if (devices.size() != 1) throw std::invalid_argument("--devices: eval runs on one device");
  return devices.front();
}

// The loader of `dataset` in order, --batch-size images a batch, with the model's pipeline.
std::unique_ptr<data::Loader> eval_loader(const ArgParser& parser, data::DatasetPtr dataset,
                                          const LoadedModel& model) {
  data::LoaderOptions options;
  options.batch_size = int_option(parser, "batch-size", /*minimum=*/1);
  options.workers = int_option(parser, "workers", /*minimum=*/0);
  options.shuffle = false;
  return std::make_unique<data::Loader>(
      std::move(dataset), transforms::eval_pipeline(model.pipeline, parser.get_flag("ten-crop")),
      options);
}

// Evaluates `model` on every batch of `loader`, with a progress line on stderr.
train::EvalResult evaluate_with_progress(const LoadedModel& model, data::Loader& loader,
                                         const torch::Device& device,
                                         train::ConfidentMistakes& mistakes) {
  train::ProgressLine progress(std::cerr);
  const auto result = train::evaluate(
      model.forward, loader, device,
      [&](int64_t done, int64_t total) {
        if (progress.live() || done == total || done % 20 == 0) {
          progress.update("evaluating batch " + std::to_string(done) + "/" + std::to_string(total));
        }
      },
      &mistakes);
  if (progress.live()) progress.print("");
  return result;
}

// The result as JSON, with the per-class breakdown where every output has a class name.
json eval_report(const ArgParser& parser, const train::EvalResult& result,
                 const data::Dataset& dataset, const std::string& source,
                 train::Precision precision, const torch::Device& device) {
  json out = result.to_json();
  const auto classes = static_cast<int64_t>(dataset.class_names().size());
  if (result.confusion.defined() && result.confusion.size(0) == classes) {
    const json breakdown = result.breakdown_json(dataset.class_names());
    out["per_class"] = breakdown.at("per_class");
    out["confusion"] = breakdown.at("confusion");
  }
  out["data"] = source;
  out["split"] = parser.get("split");
  out["crops"] = parser.get_flag("ten-crop") ? "ten" : "centre";
  out["precision"] = train::precision_name(precision);
  out["bf16_emulated"] = train::emulates_bf16(precision, device);
  if (parser.has("labels")) out["labels"] = parser.get("labels");
  out["images_per_s"] = static_cast<double>(result.samples) / std::max(result.seconds, 1e-9);
  return out;
}

void print_eval_text(const train::EvalResult& result, const json& report) {
  std::cout << std::fixed << std::setprecision(2) << report.at("data").get<std::string>() << " "
            << report.at("split").get<std::string>() << ", " << result.samples << " images, "
            << (report.at("crops") == "ten" ? "ten crops" : "centre crop") << ": top-1 error "
            << 100 * result.top1_error << "% (accuracy " << 100 * (1 - result.top1_error)
            << "%), top-5 error " << 100 * result.top5_error << "%, loss " << std::setprecision(4)
            << result.loss << std::setprecision(1) << ", " << result.seconds << " s\n";
  for (const auto& c : report.value("per_class", json::array())) {
    std::cout << "  " << c.at("class").get<std::string>() << ": " << c.at("samples") << " images";
    if (!c.at("top1_accuracy").is_null()) {
      std::cout << ", top-1 accuracy " << std::setprecision(2)
                << 100 * c.at("top1_accuracy").get<double>() << "%";
    }
    std::cout << "\n";
  }
}

int run_eval(const std::vector<std::string>& args) {
  ArgParser parser = eval_parser();
  if (!parser.parse(args)) return 0;
  runtime::tune_runtime({"eval"}, args);
  if (parser.has("model") == parser.has("checkpoint")) {
    throw cli::UsageError("give exactly one of --model and --checkpoint");
  }
  if (parser.has("labels") && !parser.has("data")) {
    throw cli::UsageError("--labels needs --data FOLDER, the folder of the images it labels");
  }
  if (parser.get_int("save-errors") < 0) throw cli::UsageError("--save-errors must be >= 0");
  if (parser.has("errors-png") && parser.get_int("save-errors") == 0) {
    throw cli::UsageError("--errors-png needs --save-errors N (N > 0)");
  }
  apply_threads_option(parser);
  const torch::Device device = eval_device(parser);
  const train::Precision precision = precision_option(parser, device);
  const LoadedModel model =
      parser.has("model") ? load_torchscript(parser.get("model"), device, precision)
                          : load_checkpoint_model(parser.get("checkpoint"), device, precision);
  // Once the model is read, so that the note does not precede an error about the file.
  if (const auto advice = train::precision_advice(precision, device); !advice.empty()) {
    std::cerr << advice << "\n";
  }
  std::string source = parser.has("data") ? parser.get("data") : model.default_data;
  if (source.empty()) source = "fashion-mnist";

  const data::DatasetPtr dataset = open_eval_data(parser, source, model);
  const auto loader = eval_loader(parser, dataset, model);
  train::ConfidentMistakes mistakes(static_cast<size_t>(parser.get_int("save-errors")));
  const auto result = evaluate_with_progress(model, *loader, device, mistakes);

  // The figures first: a picture that cannot be written (a full disk) loses no result.
  const json report = eval_report(parser, result, *dataset, source, precision, device);
  if (parser.get_flag("json")) {
    std::cout << report.dump(2, ' ', false, json::error_handler_t::replace) << "\n" << std::flush;
  } else {
    print_eval_text(result, report);
    std::cout << std::flush;
  }
  write_eval_pictures(parser, result, mistakes.mistakes(), *dataset);
  return 0;
}

const Registration kEvalRegistration{"eval", "top-1/top-5 error of a model or checkpoint",
                                     run_eval};

}  // namespace
}  // namespace alexnet::cli
