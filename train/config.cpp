#include "train/config.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "train/layer_settings.h"

namespace alexnet::train {
namespace {

using nlohmann::json;

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

// Reads the keys of one JSON object into typed fields and refuses the keys it did not read.
class ObjectReader {
 public:
  ObjectReader(const json& object, std::string prefix)
      : object_(object), prefix_(std::move(prefix)) {
    if (!object_.is_object()) {
      throw std::invalid_argument(
          "configuration " + (prefix_.empty() ? std::string("root") : "key '" + prefix_ + "'") +
          " must be a JSON object, got " + object_.dump());
    }
  }

  std::string path(const std::string& key) const {
    return prefix_.empty() ? key : prefix_ + "." + key;
  }

  const json* find(const std::string& key) {
    known_.push_back(key);
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }

  void read(const std::string& key, int64_t& out, int64_t min_value) {
    if (const json* value = find(key)) {
      if (!value->is_number_integer() || value->get<int64_t>() < min_value) {
        fail(key, *value, "an integer >= " + std::to_string(min_value));
      }
      out = value->get<int64_t>();
    }
  }
  void read(const std::string& key, uint64_t& out) {
    if (const json* value = find(key)) {
      if (!value->is_number_integer() || value->get<int64_t>() < 0) {
        fail(key, *value, "a non-negative integer");
      }
      out = value->get<uint64_t>();
    }
  }
  void read(const std::string& key, double& out, double min_value, double max_value) {
    if (const json* value = find(key)) {
      if (!value->is_number() || value->get<double>() < min_value ||
          value->get<double>() > max_value) {
        std::ostringstream range;
        range << "a number in [" << min_value << ", " << max_value << "]";
        fail(key, *value, range.str());
      }
      out = value->get<double>();
    }
  }
  void read(const std::string& key, bool& out) {
    if (const json* value = find(key)) {
      if (!value->is_boolean()) fail(key, *value, "true or false");
      out = value->get<bool>();
    }
  }
  void read(const std::string& key, std::string& out) {
    if (const json* value = find(key)) {
      if (!value->is_string()) fail(key, *value, "a string");
      out = value->get<std::string>();
    }
  }
  void read_choice(const std::string& key, std::string& out,
                   const std::vector<std::string>& allowed) {
    if (const json* value = find(key)) {
      const bool ok = value->is_string() && std::find(allowed.begin(), allowed.end(),
                                                      value->get<std::string>()) != allowed.end();
      if (!ok) fail(key, *value, "one of " + join(allowed, ", "));
      out = value->get<std::string>();
    }
  }
  void read(const std::string& key, std::vector<double>& out) {
    if (const json* value = find(key)) {
      bool ok = value->is_array();
      for (const auto& item : ok ? *value : json::array()) ok = ok && item.is_number();
      if (!ok) fail(key, *value, "a list of numbers");
      out = value->get<std::vector<double>>();
    }
  }

  [[noreturn]] void fail(const std::string& key, const json& value, const std::string& allowed) {
    throw std::invalid_argument("configuration key '" + path(key) + "' must be " + allowed +
                                ", got " + value.dump());
  }

  // Throws naming the first key that no read() asked for.
  void finish() const {
    for (const auto& item : object_.items()) {
      if (item.key().rfind('_', 0) == 0) continue;  // a comment
      if (std::find(known_.begin(), known_.end(), item.key()) == known_.end()) {
        throw std::invalid_argument(
            "unknown configuration key '" + path(item.key()) + "'; allowed keys" +
            (prefix_.empty() ? "" : " in '" + prefix_ + "'") + ": " + join(known_, ", "));
      }
    }
  }

 private:
  const json& object_;
  std::string prefix_;
  std::vector<std::string> known_;
};

void check_channels(ObjectReader& reader, const std::string& key, const std::vector<double>& v) {
  if (!v.empty() && v.size() != 1 && v.size() != 3) {
    reader.fail(key, json(v), "an empty list or a list of 1 or 3 numbers");
  }
}

// model.remove_conv and model.extra_conv: "" or a layer that may be removed or copied.
void read_conv_name(ObjectReader& reader, const std::string& key, std::string& out) {
  reader.read(key, out);
  const auto& names = variable_convs();
  if (!out.empty() && std::find(names.begin(), names.end(), out) == names.end()) {
    reader.fail(key, out, "\"\" (none) or one of " + join(names, ", "));
  }
}

}  // namespace

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

  reader.read("num_classes", num_classes, 1);
  reader.read("in_channels", in_channels, 1);
  reader.read("dropout", dropout, 0.0, 0.999);
  reader.read("lrn", lrn);
  reader.read("lrn_size", lrn_size, 1);
  if (lrn_size % 2 == 0) reader.fail("lrn_size", lrn_size, "an odd integer >= 1");
  reader.read("lrn_alpha", alpha, 0.0, 1e9);
  reader.read("lrn_beta", beta, 0.0, 1e9);
  reader.read("lrn_k", k, 0.0, 1e9);
  reader.read("lrn_divide_alpha_by_size", divide);
  reader.read("pool_kernel", pool_kernel, 2);
  if (pool_kernel != 2 && pool_kernel != 3) reader.fail("pool_kernel", pool_kernel, "2 or 3");
  reader.read("pool_stride", pool_stride, 1);
  if (pool_stride != 2) reader.fail("pool_stride", pool_stride, "2");
  reader.read_choice("activation", activation, {"relu", "tanh"});
  reader.read_choice("init", init, {"paper", "kaiming"});
  reader.read("columns", columns, 1);
  if (columns != 1 && columns != 2) reader.fail("columns", columns, "1 or 2");
  reader.read("width", width, 1.0 / 64, 16.0);
  read_conv_name(reader, "remove_conv", remove_conv);
  read_conv_name(reader, "extra_conv", extra_conv);
  if (!extra_conv.empty() && extra_conv == remove_conv) {
    reader.fail("extra_conv", extra_conv, "a layer other than model.remove_conv");
  }
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
                {"normalize", d.normalize},
                {"mean", d.mean},
                {"std", d.std},
                {"eigenvalues", d.eigenvalues},
                {"eigenvectors", d.eigenvectors},
                {"stats_images", d.stats_images},
                {"workers", d.workers}}},
              {"optimizer",
               {{"rule", o.rule},
                {"lr", o.lr},
                {"momentum", o.momentum},
                {"weight_decay", o.weight_decay},
                {"bias_lr_multiplier", o.bias_lr_multiplier},
                {"bias_weight_decay", o.bias_weight_decay}}},
              {"schedule",
               {{"kind", s.kind},
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

  if (const json* model = root.find("model")) {
    json copy = *model;
    config.num_classes_auto = false;
    if (copy.is_object() && copy.contains("num_classes") && copy["num_classes"] == "auto") {
      config.num_classes_auto = true;
      copy.erase("num_classes");
    }
    config.model = model_options_from_json(copy);
    if (copy.contains("freeze")) config.freeze = freeze_from_json(copy["freeze"], config.model);
  }

  if (const json* data = root.find("data")) {
    ObjectReader reader(*data, "data");
    auto& d = config.data;
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
    reader.read("crop", d.crop, 63);
    reader.read("flip", d.flip);
    reader.read("pca_lighting", d.pca_lighting);
    reader.read_choice("normalize", d.normalize, {"mean", "mean_std", "none"});
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

  if (const json* optimizer = root.find("optimizer")) {
    ObjectReader reader(*optimizer, "optimizer");
    auto& o = config.optimizer;
    reader.read_choice("rule", o.rule, {"paper", "pytorch"});
    reader.read("lr", o.lr, 0.0, 1e9);
    reader.read("momentum", o.momentum, 0.0, 0.9999);
    reader.read("weight_decay", o.weight_decay, 0.0, 1.0);
    reader.read("bias_lr_multiplier", o.bias_lr_multiplier, 0.0, 1e6);
    reader.read("bias_weight_decay", o.bias_weight_decay, 0.0, 1e6);
    if (const json* lr_mult = reader.find("lr_mult")) {
      o.lr_mult = lr_mult_from_json(*lr_mult, config.model);
    }
    reader.finish();
  }

  if (const json* schedule = root.find("schedule")) {
    ObjectReader reader(*schedule, "schedule");
    auto& s = config.schedule;
    reader.read_choice("kind", s.kind, {"plateau", "step", "constant"});
    reader.read("milestones", s.milestones);
    reader.read("factor", s.factor, 1e-9, 1.0);
    reader.read("patience", s.patience, 1);
    reader.read("max_drops", s.max_drops, 0);
    reader.read("threshold", s.threshold, 0.0, 1.0);
    reader.finish();
    for (size_t i = 0; i < s.milestones.size(); ++i) {
      if (s.milestones[i] <= 0 || (i > 0 && s.milestones[i] <= s.milestones[i - 1])) {
        reader.fail("milestones", json(s.milestones),
                    "a list of increasing positive epoch numbers");
      }
    }
    if (s.kind == "step" && s.milestones.empty()) {
      reader.fail("milestones", json(s.milestones), "non-empty when schedule.kind is \"step\"");
    }
  }

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
      while (std::getline(items, item, ',')) torch::Device device(item);
    } catch (const std::exception&) {
      root.fail("devices", config.devices, "auto, cpu, cuda:N or two devices (cuda:0,cuda:1)");
    }
  }
  root.read("threads", config.threads, 0);
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
  if (const json* checkpoint = root.find("checkpoint")) {
    ObjectReader reader(*checkpoint, "checkpoint");
    reader.read("keep_last", config.checkpoint.keep_last, 0);
    reader.finish();
  }
  root.finish();
  return config;
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open configuration file '" + path + "'");
  try {
    return json::parse(in, /*cb=*/nullptr, /*allow_exceptions=*/true, /*ignore_comments=*/true);
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
    set_config_value(object, item.substr(0, eq), item.substr(eq + 1));
  }
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
