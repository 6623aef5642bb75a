#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"

namespace alexnet::data {

/// CIFAR-10 in its binary format (the "CIFAR-10 binary version" archive,
/// cifar-10-batches-bin/): data_batch_1.bin .. data_batch_5.bin (training) and
/// test_batch.bin (test), each a sequence of 3073-byte records (one label byte 0..9, then
/// 1024 red, 1024 green and 1024 blue bytes of a 32 x 32 image in row-major order), and
/// batches.meta.txt with the class names, one per line. The records are read into memory once
/// (about 150 MB for the training split).
class Cifar10Dataset : public LabelledDataset {
 public:
  /// `dir`: the folder holding the .bin files (or a folder holding cifar-10-batches-bin/).
  /// `split`: "train", or "val" / "test". Throws std::runtime_error naming the file when one is
  /// missing or not a regular file, its size is not a positive multiple of 3073 bytes, a label
  /// is outside the class names, or batches.meta.txt is not a regular file of at most 1 MiB.
  Cifar10Dataset(const std::string& dir, const std::string& split);

  /// [3, 32, 32] uint8 RGB.
  Sample get(size_t index) const override;
  /// "FILE#RECORD", e.g. ".../data_batch_2.bin#17".
  std::string sample_source(size_t index) const override;

  /// All images, [N, 3, 32, 32] uint8.
  const torch::Tensor& images() const { return images_; }

 private:
  torch::Tensor images_;
  /// The files in reading order and the number of records before each one.
  std::vector<std::string> files_;
  std::vector<size_t> file_begin_;
};

/// The ten CIFAR-10 class names, by label (used when batches.meta.txt is absent).
const std::vector<std::string>& cifar10_class_names();

/// Whether `dir` (or dir/cifar-10-batches-bin) holds CIFAR-10 binary batch files.
bool is_cifar10_folder(const std::string& dir);

/// Opens CIFAR-10 binary data for "train" or "val"/"test" (see Cifar10Dataset).
DatasetPtr open_cifar10(const std::string& dir, const std::string& split);

}  // namespace alexnet::data
