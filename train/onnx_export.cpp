#include "train/onnx_export.h"

#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "model/layers.h"
#include "runtime/atomic_file.h"
#include "train/config.h"
#include "train/protobuf_wire.h"

namespace alexnet::train {
namespace {

using protobuf::MessageWriter;

// Field numbers of onnx.proto (ONNX 1.12, proto2).
namespace onnx_field {
constexpr int kModelIrVersion = 1, kModelProducerName = 2, kModelProducerVersion = 3,
              kModelDocString = 6, kModelGraph = 7, kModelOpsetImport = 8, kModelMetadataProps = 14;
constexpr int kOpsetDomain = 1, kOpsetVersion = 2;
constexpr int kEntryKey = 1, kEntryValue = 2;
constexpr int kGraphNode = 1, kGraphName = 2, kGraphInitializer = 5, kGraphInput = 11,
              kGraphOutput = 12;
constexpr int kNodeInput = 1, kNodeOutput = 2, kNodeName = 3, kNodeOpType = 4, kNodeAttribute = 5;
constexpr int kAttributeName = 1, kAttributeF = 2, kAttributeI = 3, kAttributeInts = 8,
              kAttributeType = 20;
constexpr int kTensorDims = 1, kTensorDataType = 2, kTensorName = 8, kTensorRawData = 9;
constexpr int kValueInfoName = 1, kValueInfoType = 2;
constexpr int kTypeTensorType = 1, kTensorTypeElemType = 1, kTensorTypeShape = 2;
constexpr int kShapeDim = 1, kDimValue = 1, kDimParam = 2;
}  // namespace onnx_field

// AttributeProto.AttributeType and TensorProto.DataType values.
constexpr int64_t kAttributeFloat = 1, kAttributeInt = 2, kAttributeInts = 7;
constexpr int64_t kDataTypeFloat = 1;
// The IR version of ONNX 1.6, which introduced opset 11.
constexpr int64_t kOnnxIrVersion = 6;

MessageWriter int_attribute(const std::string& name, int64_t value) {
  MessageWriter a;
  a.bytes(onnx_field::kAttributeName, name).integer(onnx_field::kAttributeI, value);
  a.integer(onnx_field::kAttributeType, kAttributeInt);
  return a;
}

MessageWriter float_attribute(const std::string& name, double value) {
  MessageWriter a;
  a.bytes(onnx_field::kAttributeName, name)
      .float32(onnx_field::kAttributeF, static_cast<float>(value));
  a.integer(onnx_field::kAttributeType, kAttributeFloat);
  return a;
}

MessageWriter ints_attribute(const std::string& name, const std::vector<int64_t>& values) {
  MessageWriter a;
  a.bytes(onnx_field::kAttributeName, name);
  for (int64_t value : values) a.integer(onnx_field::kAttributeInts, value);
  a.integer(onnx_field::kAttributeType, kAttributeInts);
  return a;
}

// A float32 TensorProto holding `tensor` (any floating type) as raw little-endian bytes.
MessageWriter tensor_proto(const std::string& name, const torch::Tensor& tensor) {
  const auto values = tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  MessageWriter t;
  for (int64_t size : values.sizes()) t.integer(onnx_field::kTensorDims, size);
  t.integer(onnx_field::kTensorDataType, kDataTypeFloat).bytes(onnx_field::kTensorName, name);
  std::string raw(static_cast<size_t>(values.numel()) * sizeof(float), '\0');
  const auto* data = values.data_ptr<float>();
  const uint16_t probe = 1;
  if (*reinterpret_cast<const uint8_t*>(&probe) == 1) {
    std::memcpy(raw.data(), data, raw.size());
  } else {
    for (int64_t i = 0; i < values.numel(); ++i) {
      uint32_t bits = 0;
      std::memcpy(&bits, data + i, sizeof(bits));
      for (int byte = 0; byte < 4; ++byte) {
        raw[static_cast<size_t>(i) * 4 + static_cast<size_t>(byte)] =
            static_cast<char>(bits >> (8 * byte));
      }
    }
  }
  t.bytes(onnx_field::kTensorRawData, raw);
  return t;
}

// A float32 ValueInfoProto; a dimension < 0 is the free batch dimension "N".
MessageWriter value_info(const std::string& name, const std::vector<int64_t>& dims) {
  MessageWriter shape;
  for (int64_t size : dims) {
    MessageWriter dim;
    if (size < 0) {
      dim.bytes(onnx_field::kDimParam, "N");
    } else {
      dim.integer(onnx_field::kDimValue, size);
    }
    shape.message(onnx_field::kShapeDim, dim);
  }
  MessageWriter tensor_type;
  tensor_type.integer(onnx_field::kTensorTypeElemType, kDataTypeFloat)
      .message(onnx_field::kTensorTypeShape, shape);
  MessageWriter type;
  type.message(onnx_field::kTypeTensorType, tensor_type);
  MessageWriter info;
  info.bytes(onnx_field::kValueInfoName, name).message(onnx_field::kValueInfoType, type);
  return info;
}

// The nodes and initializers of one graph, in the order they are added.
class GraphWriter {
 public:
  // Adds a node whose outputs are named `outputs`; the node takes the first one's name.
  std::string node(const std::string& op_type, const std::vector<std::string>& inputs,
                   const std::vector<std::string>& outputs,
                   const std::vector<MessageWriter>& attributes = {}) {
    MessageWriter n;
    for (const auto& input : inputs) n.bytes(onnx_field::kNodeInput, input);
    for (const auto& output : outputs) n.bytes(onnx_field::kNodeOutput, output);
    n.bytes(onnx_field::kNodeName, outputs.front()).bytes(onnx_field::kNodeOpType, op_type);
    for (const auto& attribute : attributes) n.message(onnx_field::kNodeAttribute, attribute);
    body_.message(onnx_field::kGraphNode, n);
    return outputs.front();
  }

  // Adds a node with one output named `name`; returns `name`.
  std::string node(const std::string& op_type, const std::vector<std::string>& inputs,
                   const std::string& name, const std::vector<MessageWriter>& attributes = {}) {
    return node(op_type, inputs, std::vector<std::string>{name}, attributes);
  }

  std::string initializer(const std::string& name, const torch::Tensor& tensor) {
    body_.message(onnx_field::kGraphInitializer, tensor_proto(name, tensor));
    return name;
  }

  // The GraphProto.
  MessageWriter graph(const std::string& name, const MessageWriter& input,
                      const MessageWriter& output) const {
    MessageWriter g;
    g.bytes(onnx_field::kGraphName, name).append(body_);
    g.message(onnx_field::kGraphInput, input).message(onnx_field::kGraphOutput, output);
    return g;
  }

 private:
  MessageWriter body_;
};

// The windows [begin, end) of adaptive average pooling from `side` to kPooledSide along one
// axis, as torch::adaptive_avg_pool2d takes them.
std::vector<std::pair<int64_t, int64_t>> adaptive_windows(int64_t side) {
  std::vector<std::pair<int64_t, int64_t>> windows;
  for (int64_t i = 0; i < kPooledSide; ++i) {
    windows.emplace_back(i * side / kPooledSide, ((i + 1) * side + kPooledSide - 1) / kPooledSide);
  }
  return windows;
}

// The kernel and stride of an AveragePool whose windows are `windows`, or {0, 0} when they are
// not evenly spaced windows of one size.
std::pair<int64_t, int64_t> uniform_window(
    const std::vector<std::pair<int64_t, int64_t>>& windows) {
  const int64_t kernel = windows[0].second - windows[0].first;
  const int64_t stride = windows.size() > 1 ? windows[1].first - windows[0].first : 1;
  if (stride < 1) return {0, 0};
  for (size_t i = 0; i < windows.size(); ++i) {
    const auto begin = static_cast<int64_t>(i) * stride;
    if (windows[i].first != begin || windows[i].second != begin + kernel) return {0, 0};
  }
  return {kernel, stride};
}

// [kPooledSide^2, side^2], float64: row (i, j) averages the inputs in window i of the rows and
// window j of the columns (the adaptive average pooling as a matrix on a flattened map).
torch::Tensor pooling_matrix(int64_t side) {
  const auto windows = adaptive_windows(side);
  auto matrix = torch::zeros({kPooledSide * kPooledSide, side * side}, torch::kFloat64);
  auto m = matrix.accessor<double, 2>();
  for (int64_t i = 0; i < kPooledSide; ++i) {
    for (int64_t j = 0; j < kPooledSide; ++j) {
      const auto [row_begin, row_end] = windows[static_cast<size_t>(i)];
      const auto [col_begin, col_end] = windows[static_cast<size_t>(j)];
      const double weight =
          1.0 / static_cast<double>((row_end - row_begin) * (col_end - col_begin));
      for (int64_t r = row_begin; r < row_end; ++r) {
        for (int64_t c = col_begin; c < col_end; ++c) m[i * kPooledSide + j][r * side + c] = weight;
      }
    }
  }
  return matrix;
}

// fc6's weight [out, channels * kPooledSide^2] applied after `pooling` ([kPooledSide^2, side^2]):
// the weight [out, channels * side^2] of the same function on the unpooled maps.
torch::Tensor fold_pooling(const torch::Tensor& weight, const torch::Tensor& pooling) {
  const int64_t out = weight.size(0);
  const int64_t pooled = pooling.size(0);
  TORCH_CHECK(weight.size(1) % pooled == 0, "export: ", weight.size(1),
              " inputs of the first fully connected layer are not a multiple of ", pooled);
  const auto per_channel = weight.to(torch::kCPU, torch::kFloat64).reshape({out, -1, pooled});
  return torch::matmul(per_channel, pooling).reshape({out, -1});
}

std::string json_text(const nlohmann::json& value) { return value.dump(); }

MessageWriter metadata_entry(const std::string& key, const std::string& value) {
  MessageWriter entry;
  entry.bytes(onnx_field::kEntryKey, key).bytes(onnx_field::kEntryValue, value);
  return entry;
}

// Adds the LRN after layer `name` to `x` (ONNX's LRN normalises across all channels, so two
// columns are split, normalised apart and concatenated); returns the output's name.
std::string add_lrn(GraphWriter& graph, const std::string& x, const std::string& name,
                    const AlexNetOptions& options) {
  const auto& lrn = options.lrn_options();
  // ONNX's LRN multiplies the window's sum of squares by alpha / size.
  const std::vector<MessageWriter> attributes{
      int_attribute("size", lrn.size()),
      float_attribute("alpha", lrn.effective_alpha() * static_cast<double>(lrn.size())),
      float_attribute("beta", lrn.beta()), float_attribute("bias", lrn.k())};
  const std::string lrn_name = name + "_lrn";
  if (options.columns() == 1) return graph.node("LRN", {x}, lrn_name, attributes);
  std::vector<std::string> parts;
  for (int64_t c = 0; c < options.columns(); ++c) {
    parts.push_back(lrn_name + "_column" + std::to_string(c));
  }
  std::vector<std::string> split_outputs;
  for (const auto& part : parts) split_outputs.push_back(part + "_in");
  graph.node("Split", {x}, split_outputs, {int_attribute("axis", 1)});
  for (size_t c = 0; c < parts.size(); ++c) {
    graph.node("LRN", {split_outputs[c]}, parts[c], attributes);
  }
  return graph.node("Concat", parts, lrn_name, {int_attribute("axis", 1)});
}

// Adds the pooling of `side` x `side` maps to kPooledSide x kPooledSide after layer `name`
// and the flattening for fc6; returns the output's name. A pooling with uneven windows has no
// ONNX operator: it is returned in `fold_into_fc6` instead, to be folded into fc6's weight.
std::string add_flatten(GraphWriter& graph, std::string x, const std::string& name, int64_t side,
                        int64_t image_size, torch::Tensor& fold_into_fc6) {
  TORCH_CHECK(side >= 1, "export: image_size ", image_size,
              " leaves no feature map before the first fully connected layer");
  if (side != kPooledSide) {
    const auto [kernel, stride] = uniform_window(adaptive_windows(side));
    if (kernel > 0) {
      x = graph.node("AveragePool", {x}, name + "_avgpool",
                     {ints_attribute("kernel_shape", {kernel, kernel}),
                      ints_attribute("strides", {stride, stride})});
    } else {
      fold_into_fc6 = pooling_matrix(side);
    }
  }
  return graph.node("Flatten", {x}, name + "_flatten", {int_attribute("axis", 1)});
}

// Adds the model's layers (model->table) with their weights to `graph`, from the input
// "input" of info.image_size pixels; returns the name of the logits.
std::string add_layers(GraphWriter& graph, AlexNet& model, const ExportInfo& info) {
  const AlexNetOptions& options = model->options;
  const auto state = model->single_device_state();
  const std::vector<LayerSpec>& table = model->table;
  auto parameter = [&](const std::string& layer, const std::string& kind) {
    const torch::Tensor* value = state.find(layer + "." + kind);
    TORCH_CHECK(value != nullptr, "export: the model has no parameter ", layer, ".", kind);
    return *value;
  };
  std::string x = "input";
  int64_t side = info.image_size;  // of the feature maps, while they are maps
  torch::Tensor pending_pooling;   // an adaptive pooling folded into the next layer's weight
  const std::string activation = options.activation() == Activation::kReLU ? "Relu" : "Tanh";
  for (size_t i = 0; i < table.size(); ++i) {
    const LayerSpec& spec = table[i];
    const std::string& name = spec.name;
    torch::Tensor weight = parameter(name, "weight");
    if (pending_pooling.defined()) {
      weight = fold_pooling(weight, pending_pooling);
      pending_pooling = torch::Tensor();
    }
    const std::vector<std::string> inputs{
        x, graph.initializer(name + ".weight", weight),
        graph.initializer(name + ".bias", parameter(name, "bias"))};
    if (spec.conv) {
      const int64_t groups = i == 0 || spec.crosses ? 1 : options.columns();
      x = graph.node(
          "Conv", inputs, name,
          {ints_attribute("kernel_shape", {spec.kernel, spec.kernel}),
           ints_attribute("strides", {spec.stride, spec.stride}),
           ints_attribute("pads", {spec.padding, spec.padding, spec.padding, spec.padding}),
           int_attribute("group", groups)});
      side = (side + 2 * spec.padding - spec.kernel) / spec.stride + 1;
    } else {
      x = graph.node("Gemm", inputs, name, {int_attribute("transB", 1)});
    }
    if (i + 1 == table.size()) break;  // fc8: the logits

    x = graph.node(activation, {x}, name + (activation == "Relu" ? "_relu" : "_tanh"));
    if (spec.lrn_after && options.lrn()) x = add_lrn(graph, x, name, options);
    if (spec.pool_after) {
      const int64_t kernel = options.pool_kernel(), stride = options.pool_stride();
      x = graph.node("MaxPool", {x}, name + "_pool",
                     {ints_attribute("kernel_shape", {kernel, kernel}),
                      ints_attribute("strides", {stride, stride})});
      side = (side - kernel) / stride + 1;
    }
    if (flattens_after(table, i)) {
      x = add_flatten(graph, x, name, side, info.image_size, pending_pooling);
    }
  }
  return x;
}

}  // namespace

std::string onnx_model_bytes(AlexNet& model, const ExportInfo& info) {
  const AlexNetOptions& options = model->options;
  check_export_info(options, info);
  torch::NoGradGuard no_grad;
  GraphWriter graph;
  const std::string logits = add_layers(graph, model, info);

  MessageWriter opset;
  opset.bytes(onnx_field::kOpsetDomain, "").integer(onnx_field::kOpsetVersion, kOnnxOpset);
  MessageWriter onnx_model;
  onnx_model.integer(onnx_field::kModelIrVersion, kOnnxIrVersion)
      .message(onnx_field::kModelOpsetImport, opset)
      .bytes(onnx_field::kModelProducerName, "alexnet-cpp")
      .bytes(onnx_field::kModelProducerVersion, "0.1.0")
      .bytes(onnx_field::kModelDocString,
             "AlexNet (Krizhevsky et al. 2012). Input: pixels on the 0..255 scale, shorter side "
             "resized to resize_size, central image_size crop, minus mean, divided by std "
             "(metadata). Output: logits.");
  onnx_model.message(onnx_field::kModelGraph,
                     graph.graph("alexnet",
                                 value_info("input", {-1, options.in_channels(), info.image_size,
                                                      info.image_size}),
                                 value_info(logits, {-1, options.num_classes()})));
  const std::map<std::string, nlohmann::json> metadata{
      {"class_names", info.class_names},
      {"image_size", info.image_size},
      {"resize_size", info.resize_size},
      {"in_channels", options.in_channels()},
      {"num_classes", options.num_classes()},
      {"mean", info.mean},
      {"std", info.std},
      {"model_options", model_options_to_json(options)}};
  for (const auto& [key, value] : metadata) {
    onnx_model.message(onnx_field::kModelMetadataProps, metadata_entry(key, json_text(value)));
  }
  return onnx_model.data();
}

void save_onnx(AlexNet& model, const ExportInfo& info, const std::string& path) {
  runtime::write_file_atomically(path, onnx_model_bytes(model, info));
}

namespace {

// Reads the metadata properties of one file, naming it and the property in every error.
class OnnxMetadataReader {
 public:
  explicit OnnxMetadataReader(const std::string& path) : path_(path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("ONNX model '" + path + "' cannot be opened");
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw std::runtime_error("ONNX model '" + path + "' cannot be read");
    protobuf::MessageReader model(bytes, "ONNX model '" + path + "'");
    protobuf::Field field;
    bool has_graph = false;
    while (model.next(field)) {
      if (field.number == onnx_field::kModelGraph) has_graph = true;
      if (field.number != onnx_field::kModelMetadataProps) continue;
      if (field.type != protobuf::WireType::kLengthDelimited)
        fail_file("a malformed metadata entry");
      protobuf::MessageReader entry(field.bytes, "ONNX model '" + path + "' metadata entry");
      protobuf::Field part;
      std::string key, value;
      while (entry.next(part)) {
        if (part.type != protobuf::WireType::kLengthDelimited) continue;
        if (part.number == onnx_field::kEntryKey) key = std::string(part.bytes);
        if (part.number == onnx_field::kEntryValue) value = std::string(part.bytes);
      }
      properties_[key] = value;
    }
    if (!has_graph) fail_file("no graph (not an ONNX model?)");
  }

  int64_t integer(const std::string& key) const {
    const auto value = get(key);
    if (!value.is_number_integer()) fail(key, "is not an integer");
    return value.get<int64_t>();
  }

  std::vector<double> numbers(const std::string& key) const {
    const auto value = get(key);
    if (!value.is_array()) fail(key, "is not a list of numbers");
    std::vector<double> out;
    for (const auto& item : value) {
      if (!item.is_number()) fail(key, "is not a list of numbers");
      out.push_back(item.get<double>());
    }
    return out;
  }

  std::vector<std::string> strings(const std::string& key) const {
    const auto value = get(key);
    if (!value.is_array()) fail(key, "is not a list of strings");
    std::vector<std::string> out;
    for (const auto& item : value) {
      if (!item.is_string()) fail(key, "is not a list of strings");
      out.push_back(item.get<std::string>());
    }
    return out;
  }

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw std::runtime_error("ONNX model '" + path_ + "': metadata property '" + key + "' " +
                             problem);
  }

 private:
  [[noreturn]] void fail_file(const std::string& problem) const {
    throw std::runtime_error("ONNX model '" + path_ + "' has " + problem);
  }

  nlohmann::json get(const std::string& key) const {
    const auto found = properties_.find(key);
    if (found == properties_.end()) fail(key, "is missing (not a file written by alexnet export?)");
    try {
      return nlohmann::json::parse(found->second);
    } catch (const nlohmann::json::exception&) {
      fail(key, "is not JSON: '" + found->second + "'");
    }
  }

  std::string path_;
  std::map<std::string, std::string> properties_;
};

}  // namespace

OnnxMetadata read_onnx_metadata(const std::string& path) {
  const OnnxMetadataReader reader(path);
  OnnxMetadata metadata;
  ExportInfo& info = metadata.info;
  info.class_names = reader.strings("class_names");
  info.image_size = reader.integer("image_size");
  info.resize_size = reader.integer("resize_size");
  info.mean = reader.numbers("mean");
  info.std = reader.numbers("std");
  metadata.in_channels = reader.integer("in_channels");
  metadata.num_classes = reader.integer("num_classes");

  check_export_ranges(
      info, metadata.in_channels, metadata.num_classes,
      [&](const std::string& key, const std::string& problem) { reader.fail(key, problem); });
  return metadata;
}

}  // namespace alexnet::train
