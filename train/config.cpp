#include "train/config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "train/config_reader.h"
#include "train/layer_settings.h"

namespace alexnet::train {
namespace {

using nlohmann::json;

const NameTable<Normalize>& normalize_names() {
  static const NameTable<Normalize> names{
      {Normalize::kMean, "mean"}, {Normalize::kMeanStd, "mean_std"}, {Normalize::kNone, "none"}};
  return names;
}

const NameTable<SgdRule>& sgd_rule_names() {
  static const NameTable<SgdRule> names{{SgdRule::kPaper, "paper"}, {SgdRule::kPytorch, "pytorch"}};
  return names;
}

const NameTable<ScheduleKind>& schedule_kind_names() {
  static const NameTable<ScheduleKind> names{{ScheduleKind::kPlateau, "plateau"},
                                             {ScheduleKind::kStep, "step"},
                                             {ScheduleKind::kConstant, "constant"}};
  return names;
}

// Far beyond any machine's cores: a typo, which would otherwise start that many threads.
constexpr int64_t kMaxThreads = 1024;
constexpr int64_t kMaxWorkers = 256;

void check_channels(ObjectReader& reader, const std::string& key, const std::vector<double>& v) {
  if (!v.empty() && v.size() != 1 && v.size() != 3) {
    reader.fail(key, json(v), "an empty list or a list of 1 or 3 numbers");
  }
}

// Reads the "data" object into `d`.
void read_data_config(const json& object, DataConfig& d) {
  ObjectReader reader(object, "data");
  reader.read("source", d.source);
  reader.read("val_source", d.val_source);
  reader.read("val_labels", d.val_labels);
  reader.read_choice("val_labels_format", d.val_labels_format,
                     {"auto", "list", "kaggle", "devkit"});
  reader.read("val_synsets", d.val_synsets);
  reader.read("holdout", d.holdout, 0);
  reader.read("train_limit", d.train_limit, 0);
  reader.read("val_limit", d.val_limit, 0);
  reader.read("decode_size", d.decode_size, 0);
  reader.read("resize", d.resize, 0);
  reader.read("crop", d.crop, kMinImageSide);
  reader.read("flip", d.flip);
  reader.read("pca_lighting", d.pca_lighting);
  reader.read_enum("normalize", d.normalize, normalize_names());
  reader.read("mean", d.mean);
  reader.read("std", d.std);
  check_channels(reader, "mean", d.mean);
  check_channels(reader, "std", d.std);
  reader.read("eigenvalues", d.eigenvalues);
  reader.read("eigenvectors", d.eigenvectors);
  if (!d.eigenvalues.empty() && d.eigenvalues.size() != 3) {
    reader.fail("eigenvalues", json(d.eigenvalues), "an empty list or 3 numbers");
  }
  if (!d.eigenvectors.empty() && d.eigenvectors.size() != 9) {
    reader.fail("eigenvectors", json(d.eigenvectors), "an empty list or 9 numbers (3x3)");
  }
  for (double v : d.std) {
    if (v <= 0) reader.fail("std", json(d.std), "a list of positive numbers");
  }
  reader.read("stats_images", d.stats_images, 0);
  reader.read("workers", d.workers, 0);
  if (d.workers > kMaxWorkers)
    reader.fail("workers", d.workers, "0 .. " + std::to_string(kMaxWorkers));
  reader.finish();
  if (d.resize != 0 && d.resize < d.crop) {
    reader.fail("resize", d.resize, "0 or at least data.crop (" + std::to_string(d.crop) + ")");
  }
  if (!d.val_labels.empty() && d.val_source.empty()) {
    reader.fail("val_source", d.val_source,
                "the folder of validation images that data.val_labels labels");
  }
  if (!d.val_labels.empty() && d.holdout > 0) {
    reader.fail("holdout", d.holdout, "0 when data.val_labels gives the validation set");
  }
  if (!d.val_synsets.empty() && d.val_labels.empty()) {
    reader.fail("val_synsets", d.val_synsets,
                "\"\" unless data.val_labels names the devkit's ground truth");
  }
  if (d.source.empty())
    reader.fail("source", d.source,
                "a data source: an image folder, packed file, IDX folder or fashion-mnist "
                "(pass --data)");
}

// Reads the "optimizer" object into `o`; lr_mult's layers are checked against `model`.
void read_optimizer_config(const json& object, const AlexNetOptions& model, OptimizerConfig& o) {
  ObjectReader reader(object, "optimizer");
  reader.read_enum("rule", o.rule, sgd_rule_names());
  reader.read("lr", o.lr, 0.0, 1e9);
  reader.read("momentum", o.momentum, 0.0, 0.9999);
  reader.read("weight_decay", o.weight_decay, 0.0, 1.0);
  reader.read("bias_lr_multiplier", o.bias_lr_multiplier, 0.0, 1e6);
  reader.read("bias_weight_decay", o.bias_weight_decay, 0.0, 1e6);
  if (const json* lr_mult = reader.find("lr_mult")) o.lr_mult = lr_mult_from_json(*lr_mult, model);
  reader.finish();
}

// Reads the "schedule" object into `s`.
void read_schedule_config(const json& object, ScheduleConfig& s) {
  ObjectReader reader(object, "schedule");
  reader.read_enum("kind", s.kind, schedule_kind_names());
  reader.read("milestones", s.milestones);
  reader.read("factor", s.factor, 1e-9, 1.0);
  reader.read("patience", s.patience, 1);
  reader.read("max_drops", s.max_drops, 0);
  reader.read("threshold", s.threshold, 0.0, 1.0);
  reader.finish();
  for (size_t i = 0; i < s.milestones.size(); ++i) {
    if (s.milestones[i] <= 0 || (i > 0 && s.milestones[i] <= s.milestones[i - 1])) {
      reader.fail("milestones", json(s.milestones), "a list of increasing positive epoch numbers");
    }
  }
  if (s.kind == ScheduleKind::kStep && s.milestones.empty()) {
    reader.fail("milestones", json(s.milestones), "non-empty when schedule.kind is \"step\"");
  }
}

// Reads "model" into config.model, config.num_classes_auto and config.freeze.
void read_model_config(const json& object, TrainConfig& config) {
  json copy = object;
  config.num_classes_auto = false;
  if (copy.is_object() && copy.contains("num_classes") && copy["num_classes"] == "auto") {
    config.num_classes_auto = true;
    copy.erase("num_classes");
  }
  config.model = model_options_from_json(copy);
  if (copy.contains("freeze")) config.freeze = freeze_from_json(copy["freeze"], config.model);
}

// A model of one input channel trains on grey images (transforms::MatchChannels): a given mean
// or std holds one value, and PCA lighting, which shifts colours, does not apply.
void check_one_channel_data(const json& root, const DataConfig& d) {
  const ObjectReader reader(root.contains("data") ? root.at("data") : json::object(), "data");
  const std::string why = " when model.in_channels is 1 (grey images)";
  if (d.pca_lighting) reader.fail("pca_lighting", d.pca_lighting, "false" + why);
  if (d.mean.size() > 1) reader.fail("mean", json(d.mean), "empty or 1 value" + why);
  if (d.std.size() > 1) reader.fail("std", json(d.std), "empty or 1 value" + why);
}

// Reads the root's own keys (those that are not objects of their own) into `config`.
void read_run_settings(ObjectReader& root, TrainConfig& config) {
  root.read("epochs", config.epochs, 1);
  root.read("max_steps", config.max_steps, 0);
  root.read("batch_size", config.batch_size, 1);
  root.read("eval_batch_size", config.eval_batch_size, 1);
  root.read("seed", config.seed);
  root.read("devices", config.devices);
  if (config.devices != "auto") {
    try {
      // Syntax only: whether the devices exist is checked when training starts.
      std::stringstream items(config.devices);
      std::string item;
      int count = 0;
      while (std::getline(items, item, ',')) {
        torch::Device device(item);
        ++count;
      }
      if (count < 1 || count > 2 || config.devices.back() == ',') {
        throw std::invalid_argument("one or two devices");
      }
    } catch (const std::exception&) {
      root.fail("devices", config.devices, "auto, cpu, cuda:N or two devices (cuda:0,cuda:1)");
    }
  }
  root.read("threads", config.threads, 0);
  if (config.threads > kMaxThreads) {
    root.fail("threads", config.threads, "0 (every core) .. " + std::to_string(kMaxThreads));
  }
  root.read("log_interval", config.log_interval, 1);
  root.read("checkpoint_interval", config.checkpoint_interval, 0);
  root.read("val_ten_crop", config.val_ten_crop);
  root.read("init_from", config.init_from);
  std::string precision = precision_name(config.precision);
  root.read("precision", precision);
  try {
    config.precision = parse_precision(precision);
  } catch (const std::invalid_argument&) {
    root.fail("precision", precision, "fp32, bf16 or fp16");
  }
}

}  // namespace

std::string to_string(Normalize normalize) { return name_of(normalize_names(), normalize); }
std::string to_string(SgdRule rule) { return name_of(sgd_rule_names(), rule); }
std::string to_string(ScheduleKind kind) { return name_of(schedule_kind_names(), kind); }

json model_options_to_json(const AlexNetOptions& options) {
  const auto& lrn = options.lrn_options();
  return json{{"num_classes", options.num_classes()},
              {"in_channels", options.in_channels()},
              {"dropout", options.dropout()},
              {"lrn", options.lrn()},
              {"lrn_size", lrn.size()},
              {"lrn_alpha", lrn.alpha()},
              {"lrn_beta", lrn.beta()},
              {"lrn_k", lrn.k()},
              {"lrn_divide_alpha_by_size", lrn.divide_alpha_by_size()},
              {"pool_kernel", options.pool_kernel()},
              {"pool_stride", options.pool_stride()},
              {"activation", to_string(options.activation())},
              {"init", to_string(options.init())},
              {"columns", options.columns()},
              {"width", options.width()},
              {"remove_conv", options.remove_conv()},
              {"extra_conv", options.extra_conv()}};
}

AlexNetOptions model_options_from_json(const json& object) {
  ObjectReader reader(object, "model");
  AlexNetOptions options;
  int64_t num_classes = options.num_classes(), in_channels = options.in_channels();
  int64_t pool_kernel = options.pool_kernel(), pool_stride = options.pool_stride();
  int64_t columns = options.columns();
  double dropout = options.dropout();
  bool lrn = options.lrn();
  auto lrn_options = options.lrn_options();
  int64_t lrn_size = lrn_options.size();
  double alpha = lrn_options.alpha(), beta = lrn_options.beta(), k = lrn_options.k();
  bool divide = lrn_options.divide_alpha_by_size();
  std::string activation = to_string(options.activation()), init = to_string(options.init());
  double width = options.width();
  std::string remove_conv = options.remove_conv(), extra_conv = options.extra_conv();

  // Types here; ranges below, from the model's own check.
  reader.read("num_classes", num_classes);
  reader.read("in_channels", in_channels);
  reader.read("dropout", dropout);
  reader.read("lrn", lrn);
  reader.read("lrn_size", lrn_size);
  reader.read("lrn_alpha", alpha);
  reader.read("lrn_beta", beta);
  reader.read("lrn_k", k);
  reader.read("lrn_divide_alpha_by_size", divide);
  reader.read("pool_kernel", pool_kernel);
  reader.read("pool_stride", pool_stride);
  reader.read_choice("activation", activation, {"relu", "tanh"});
  reader.read_choice("init", init, {"paper", "kaiming"});
  reader.read("columns", columns);
  reader.read("width", width);
  reader.read("remove_conv", remove_conv);
  reader.read("extra_conv", extra_conv);
  reader.find("freeze");  // TrainConfig::freeze, read by config_from_json
  reader.finish();

  lrn_options.size(lrn_size).alpha(alpha).beta(beta).k(k).divide_alpha_by_size(divide);
  options.num_classes(num_classes)
      .in_channels(in_channels)
      .dropout(dropout)
      .lrn(lrn)
      .lrn_options(lrn_options)
      .pool_kernel(pool_kernel)
      .pool_stride(pool_stride)
      .activation(parse_activation(activation))
      .init(parse_init(init))
      .columns(columns)
      .width(width)
      .remove_conv(remove_conv)
      .extra_conv(extra_conv);
  if (const auto problem = find_option_problem(options)) {
    const json* given = reader.find(problem->option);
    reader.fail(problem->option, given ? *given : json(problem->value), problem->allowed);
  }
  validate(options);
  return options;
}

json to_json(const TrainConfig& config) {
  json model = model_options_to_json(config.model);
  if (config.num_classes_auto) model["num_classes"] = "auto";
  model["freeze"] = config.freeze;
  const auto& d = config.data;
  const auto& o = config.optimizer;
  const auto& s = config.schedule;
  json out = json{{"model", model},
                  {"data",
                   {{"source", d.source},
                    {"val_source", d.val_source},
                    {"val_labels", d.val_labels},
                    {"val_labels_format", d.val_labels_format},
                    {"val_synsets", d.val_synsets},
                    {"holdout", d.holdout},
                    {"train_limit", d.train_limit},
                    {"val_limit", d.val_limit},
                    {"decode_size", d.decode_size},
                    {"resize", d.resize},
                    {"crop", d.crop},
                    {"flip", d.flip},
                    {"pca_lighting", d.pca_lighting},
                    {"normalize", to_string(d.normalize)},
                    {"mean", d.mean},
                    {"std", d.std},
                    {"eigenvalues", d.eigenvalues},
                    {"eigenvectors", d.eigenvectors},
                    {"stats_images", d.stats_images},
                    {"workers", d.workers}}},
                  {"optimizer",
                   {{"rule", to_string(o.rule)},
                    {"lr", o.lr},
                    {"momentum", o.momentum},
                    {"weight_decay", o.weight_decay},
                    {"bias_lr_multiplier", o.bias_lr_multiplier},
                    {"bias_weight_decay", o.bias_weight_decay}}},
                  {"schedule",
                   {{"kind", to_string(s.kind)},
                    {"milestones", s.milestones},
                    {"factor", s.factor},
                    {"patience", s.patience},
                    {"max_drops", s.max_drops},
                    {"threshold", s.threshold}}},
                  {"epochs", config.epochs},
                  {"max_steps", config.max_steps},
                  {"batch_size", config.batch_size},
                  {"eval_batch_size", config.eval_batch_size},
                  {"seed", config.seed},
                  {"devices", config.devices},
                  {"threads", config.threads},
                  {"log_interval", config.log_interval},
                  {"checkpoint_interval", config.checkpoint_interval},
                  {"val_ten_crop", config.val_ten_crop},
                  {"precision", precision_name(config.precision)},
                  {"checkpoint", {{"keep_last", config.checkpoint.keep_last}}}};
  out["optimizer"]["lr_mult"] = o.lr_mult;
  out["init_from"] = config.init_from;
  return out;
}

TrainConfig config_from_json(const json& object) {
  TrainConfig config;
  ObjectReader root(object, "");
  if (const json* model = root.find("model")) read_model_config(*model, config);
  if (const json* data = root.find("data")) read_data_config(*data, config.data);
  if (const json* optimizer = root.find("optimizer")) {
    read_optimizer_config(*optimizer, config.model, config.optimizer);
  }
  if (const json* schedule = root.find("schedule"))
    read_schedule_config(*schedule, config.schedule);
  read_run_settings(root, config);
  if (config.model.in_channels() == 1) check_one_channel_data(object, config.data);
  if (const json* checkpoint = root.find("checkpoint")) {
    ObjectReader reader(*checkpoint, "checkpoint");
    reader.read("keep_last", config.checkpoint.keep_last, 0);
    reader.finish();
  }
  root.finish();
  return config;
}

json read_json_file(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    throw std::runtime_error("configuration file '" + path + "' is a folder");
  }
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open configuration file '" + path + "'");
  // What the parser accepts silently: a key given twice in one object (the last would win),
  // and nesting far deeper than a configuration has (copying it would overflow the stack).
  constexpr int kMaxDepth = 32;
  std::vector<std::set<std::string>> keys;
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    const bool opens =
        event == json::parse_event_t::object_start || event == json::parse_event_t::array_start;
    if (opens && depth >= kMaxDepth) {
      throw std::runtime_error("configuration file '" + path + "' nests deeper than " +
                               std::to_string(kMaxDepth) + " levels");
    }
    if (event == json::parse_event_t::object_start) keys.emplace_back();
    if (event == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
    if (event == json::parse_event_t::key && !keys.empty() &&
        !keys.back().insert(parsed.get<std::string>()).second) {
      throw std::runtime_error("configuration file '" + path + "': key '" +
                               parsed.get<std::string>() + "' appears twice in one object");
    }
    return true;
  };
  try {
    return json::parse(in, check, /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const json::exception& e) {
    throw std::runtime_error("configuration file '" + path + "' is not valid JSON: " + e.what());
  }
}

void set_config_value(json& object, const std::string& key, const std::string& value) {
  json parsed;
  try {
    parsed = json::parse(value);
  } catch (const json::exception&) {
    parsed = value;
  }
  json* node = &object;
  std::stringstream in(key);
  std::string part, walked;
  std::vector<std::string> parts;
  while (std::getline(in, part, '.')) parts.push_back(part);
  if (parts.empty()) throw std::invalid_argument("empty configuration key");
  for (size_t i = 0; i < parts.size(); ++i) {
    walked += (i ? "." : "") + parts[i];
    if (!node->is_object() || !node->contains(parts[i])) {
      throw std::invalid_argument("unknown configuration key '" + walked + "'");
    }
    node = &(*node)[parts[i]];
  }
  *node = parsed;
}

void apply_config_overrides(json& object, const std::string& overrides) {
  std::stringstream in(overrides);
  std::string item;
  while (std::getline(in, item, ';')) {
    if (item.empty()) continue;
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw std::invalid_argument("configuration override '" + item +
                                  "' is not key=value (items are separated by ';')");
    }
    // " model.lr=1" (a space after ';') names model.lr.
    std::string key = item.substr(0, eq);
    key.erase(0, key.find_first_not_of(" \t"));
    key.erase(key.find_last_not_of(" \t") + 1);
    set_config_value(object, key, item.substr(eq + 1));
  }
}

namespace {

// "a": {"b": 1} -> {"a.b": 1}; arrays and scalars are leaves.
void flatten(const json& value, const std::string& prefix, std::map<std::string, json>& out) {
  if (value.is_object()) {
    for (const auto& [key, item] : value.items()) {
      flatten(item, prefix.empty() ? key : prefix + "." + key, out);
    }
    return;
  }
  out[prefix] = value;
}

}  // namespace

std::map<std::string, std::pair<json, json>> config_differences(const json& before,
                                                                const json& after) {
  std::map<std::string, json> flat_before, flat_after;
  flatten(before, "", flat_before);
  flatten(after, "", flat_after);
  std::map<std::string, std::pair<json, json>> differences;
  for (const auto& [key, value] : flat_before) {
    const auto it = flat_after.find(key);
    if (it == flat_after.end() || it->second != value) {
      differences[key] = {value, it == flat_after.end() ? json() : it->second};
    }
  }
  for (const auto& [key, value] : flat_after) {
    if (!flat_before.count(key)) differences[key] = {json(), value};
  }
  return differences;
}

json merge_json(json base, const json& overrides) {
  if (!base.is_object() || !overrides.is_object()) return overrides;
  for (const auto& item : overrides.items()) {
    if (base.contains(item.key()) && base[item.key()].is_object() && item.value().is_object()) {
      base[item.key()] = merge_json(base[item.key()], item.value());
    } else {
      base[item.key()] = item.value();
    }
  }
  return base;
}

std::vector<torch::Device> resolve_devices(const std::string& devices) {
  if (devices == "auto") {
    const auto gpus = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
    if (gpus >= 2) return parse_devices("cuda:0,cuda:1");
    if (gpus == 1) return parse_devices("cuda:0");
    return parse_devices("cpu");
  }
  return parse_devices(devices);
}

}  // namespace alexnet::train
