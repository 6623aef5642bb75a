#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"

namespace alexnet::data {

/// MNIST-style IDX files (gzip-compressed or raw): an idx3 image file (magic 0x00000803,
/// N x rows x cols uint8) and an idx1 label file (magic 0x00000801). Both are read into
/// memory once. Both headers are checked before the data is allocated: a raw file must be
/// exactly as large as its header declares, a gzip file small enough to inflate to it
/// (deflate's ratio is at most 1032:1); a gzip file is inflated only up to the declared size
/// and one byte more, so a file holding more than its header declares is refused without
/// inflating the rest.
class IdxDataset : public LabelledDataset {
 public:
  /// Throws naming the file on a wrong magic number, a size that does not match the header
  /// (naming the header's fields), differing counts, or labels outside class_names.
  IdxDataset(const std::string& images_file, const std::string& labels_file,
             std::vector<std::string> class_names, int64_t channels = 3);

  /// [channels, rows, cols] uint8 (grey replicated when channels == 3).
  Sample get(size_t index) const override;
  std::string sample_source(size_t index) const override;

  /// All images, [N, 1, rows, cols] uint8.
  const torch::Tensor& images() const { return images_; }

 private:
  std::string images_file_;
  torch::Tensor images_;
  int64_t channels_;
};

/// Finds "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]" (also "...-images.idx3-ubyte")
/// in `dir` for split "train" or "val"/"test"; returns {images, labels} paths or throws
/// naming what is missing.
std::pair<std::string, std::string> find_idx_files(const std::string& dir,
                                                   const std::string& split);

}  // namespace alexnet::data
