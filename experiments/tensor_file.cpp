#include "experiments/tensor_file.h"

#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "runtime/atomic_file.h"

namespace alexnet::experiments {

void write_tensor_file(const std::string& path, const TensorFileKind& kind,
                       const nlohmann::json& header, const std::vector<torch::Tensor>& tensors) {
  const std::string text = header.dump();
  runtime::AtomicFile out(path);
  out.write(kind.magic, 8);
  const uint64_t length = text.size();
  out.write(reinterpret_cast<const char*>(&length), sizeof(length));
  out.write(text.data(), text.size());
  for (const auto& tensor : tensors) {
    if (!tensor.defined() || tensor.numel() == 0) continue;
    const auto c = tensor.contiguous();
    out.write(static_cast<const char*>(c.data_ptr()),
              static_cast<size_t>(c.numel() * c.element_size()));
  }
  out.commit();
}

TensorFileReader::TensorFileReader(const std::string& path, const TensorFileKind& kind)
    : path_(path), kind_(kind), in_(path, std::ios::binary) {
  if (!in_) throw std::runtime_error("cannot open " + kind.name + " " + path);
  char magic[8];
  if (!in_.read(magic, sizeof(magic)) || std::memcmp(magic, kind.magic, sizeof(magic)) != 0) {
    throw std::runtime_error(path + " is not a " + kind.name + " written by `" + kind.writer + "`");
  }
  uint64_t length = 0;
  std::error_code error;
  const auto file_size = std::filesystem::file_size(path, error);
  if (!in_.read(reinterpret_cast<char*>(&length), sizeof(length)) || error || length > file_size) {
    throw std::runtime_error(kind.name + " " + path + " is truncated (in its header)");
  }
  header_.assign(length, '\0');
  if (!in_.read(header_.data(), static_cast<std::streamsize>(length))) {
    throw std::runtime_error(kind.name + " " + path + " is truncated (in its header)");
  }
  payload_bytes_ = file_size - sizeof(magic) - sizeof(length) - length;
}

void TensorFileReader::expect(const std::vector<TensorShape>& tensors) const {
  uint64_t total = 0;
  bool overflow = false;
  for (const auto& tensor : tensors) {
    uint64_t bytes = c10::elementSize(tensor.type);
    for (const int64_t size : tensor.sizes) {
      if (size < 0) {
        throw std::runtime_error(kind_.name + " " + path_ + " has a bad header: size " +
                                 std::to_string(size) + " is negative");
      }
      overflow = overflow || __builtin_mul_overflow(bytes, static_cast<uint64_t>(size), &bytes);
    }
    overflow = overflow || __builtin_add_overflow(total, bytes, &total);
  }
  if (overflow || total != payload_bytes_) {
    throw std::runtime_error(kind_.name + " " + path_ + " holds " + std::to_string(payload_bytes_) +
                             " bytes after its header, but the header describes " +
                             (overflow ? "more than 2^64" : std::to_string(total)) +
                             " (a truncated or altered file)");
  }
}

void TensorFileReader::read(torch::Tensor& tensor, const char* what) {
  if (tensor.numel() == 0) return;
  if (!in_.read(static_cast<char*>(tensor.data_ptr()),
                static_cast<std::streamsize>(tensor.numel() * tensor.element_size()))) {
    throw std::runtime_error(kind_.name + " " + path_ + " is truncated (in its " + what + ")");
  }
}

}  // namespace alexnet::experiments
