#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

namespace alexnet::experiments {

/// One kind of the files `alexnet features` and `alexnet codes` write: 8 magic bytes, the
/// length of a JSON header (uint64, in the machine's byte order), the header, then the raw
/// bytes of tensors whose shapes and types the header implies.
struct TensorFileKind {
  /// 8 bytes that open every file of this kind.
  const char* magic;
  /// How errors name such a file: "feature index", "code file".
  std::string name;
  /// The command that writes it, named when the magic bytes are wrong: "alexnet features".
  std::string writer;
};

/// Writes `header` and the bytes of `tensors` (undefined or empty ones add nothing) to
/// PATH.tmp and renames it to `path`. Throws std::runtime_error naming the file.
void write_tensor_file(const std::string& path, const TensorFileKind& kind,
                       const nlohmann::json& header, const std::vector<torch::Tensor>& tensors);

/// Reads a file of `kind`: the magic bytes and the header when constructed, then the tensors
/// in order. Throws std::runtime_error naming the file (and the part that is truncated).
class TensorFileReader {
 public:
  TensorFileReader(const std::string& path, const TensorFileKind& kind);

  /// The header as stored (JSON text).
  const std::string& header_text() const { return header_; }
  /// The shape and type of one tensor the header describes.
  struct TensorShape {
    std::vector<int64_t> sizes;
    torch::ScalarType type;
  };
  /// Checks, before anything is allocated, that tensors of these shapes fill the rest of the
  /// file exactly. Throws std::runtime_error naming the file when a size is negative or the
  /// bytes after the header differ from what the shapes need (a truncated or crafted file).
  void expect(const std::vector<TensorShape>& tensors) const;
  /// Fills `tensor` (allocated with the shape and type the header implies) from the file;
  /// `what` names it when the file ends early.
  void read(torch::Tensor& tensor, const char* what);

 private:
  std::string path_;
  const TensorFileKind& kind_;
  std::ifstream in_;
  std::string header_;
  // Bytes after the header.
  uint64_t payload_bytes_ = 0;
};

}  // namespace alexnet::experiments
