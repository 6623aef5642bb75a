// The paper's layer table: the one place that says what AlexNet's layers are.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace alexnet {

/// One parameterised layer of AlexNet (Krizhevsky et al. 2012, section 3.5 and Figure 2).
/// Widths are per column; the single-device form holds both columns in one layer.
struct LayerSpec {
  /// conv1 .. fc8 (and an added layer's name, e.g. conv4_extra): the checkpoint keys and
  /// TorchScript attribute names.
  std::string name;
  /// A convolution (else fully connected).
  bool conv;
  /// Output units per column; 0 for fc8, whose width is the number of classes.
  int64_t width;
  /// Square kernel, stride and zero padding (convolutions only).
  int64_t kernel, stride, padding;
  /// Sees both columns' maps (conv3, fc6, fc7, fc8); the others see their own column's only
  /// (conv1 sees the image).
  bool crosses;
  /// Bias in the paper's initialisation (1 where it speeds early learning, else 0).
  double paper_bias;
  /// Local response normalisation after the activation.
  bool lrn_after;
  /// Max-pooling after the activation (and LRN).
  bool pool_after;
  /// Dropout after the activation (in training).
  bool dropout_after;
};

/// The paper's eight layers in forward order. The activation follows every layer but fc8.
/// A model's own list (AlexNetOptions' width, remove_conv and extra_conv applied) comes from
/// alexnet::layer_table.
// clang-format off
inline const LayerSpec kPaperLayers[] = {
  // name     conv   width kernel stride pad  crosses bias lrn    pool   dropout
  {"conv1",   true,     48,    11,     4,  2,  false,  0.0, true,  true,  false},
  {"conv2",   true,    128,     5,     1,  2,  false,  1.0, true,  true,  false},
  {"conv3",   true,    192,     3,     1,  1,  true,   0.0, false, false, false},
  {"conv4",   true,    192,     3,     1,  1,  false,  1.0, false, false, false},
  {"conv5",   true,    128,     3,     1,  1,  false,  1.0, false, true,  false},
  {"fc6",     false,  2048,     1,     1,  0,  true,   1.0, false, false, true},
  {"fc7",     false,  2048,     1,     1,  0,  true,   1.0, false, false, true},
  {"fc8",     false,     0,     1,     1,  0,  true,   0.0, false, false, false},
};
// clang-format on

/// The side of the feature maps entering fc6 (adaptive average pooling makes any input of
/// at least 63 x 63 pixels give 6 x 6, as 224 x 224 does in the paper).
inline constexpr int64_t kPooledSide = 6;

/// The smallest input side the paper's layers with overlapping pooling (3/2) accept: 63 gives
/// 15 after conv1, 7 after its pooling and conv2, 3 after that pooling and conv3..conv5, and 1
/// after the last pooling; 62 leaves conv5's maps (2 x 2) smaller than the pooling window.
inline constexpr int64_t kMinImageSide = 63;

/// The number in a layer's name, which the LRN and pooling after it are named with:
/// "conv1" -> "1", "conv4_extra" -> "4_extra".
inline std::string layer_number(const LayerSpec& spec) {
  return spec.name.substr(spec.name.find_first_of("0123456789"));
}

/// Whether layer i of `table` is the last convolution, after which the maps are pooled to
/// kPooledSide x kPooledSide and flattened for the fully connected layers.
inline bool flattens_after(const std::vector<LayerSpec>& table, size_t i) {
  return table[i].conv && i + 1 < table.size() && !table[i + 1].conv;
}

}  // namespace alexnet
