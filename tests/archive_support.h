// Damaged copies of files in PyTorch's zip format, for the tests of their readers.
#pragma once

#include <algorithm>
#include <string>
#include <tuple>

#include <caffe2/serialize/inline_container.h>

namespace alexnet::testing {

/// Copies the archive `from` to `to` record by record, keeping only the first `keep` bytes of
/// the first tensor record ("data/N") whose name ends in `suffix` ("/10"): a record cut short
/// in an otherwise valid archive, as a damaged download or disk may leave. Returns that
/// record's name ("" when none matched).
inline std::string copy_archive_cutting_record(const std::string& from, const std::string& to,
                                               const std::string& suffix, size_t keep) {
  caffe2::serialize::PyTorchStreamReader reader(from);
  caffe2::serialize::PyTorchStreamWriter writer(to);
  std::string cut;
  for (const auto& name : reader.getAllRecords()) {
    if (name == ".data/version" || name == "version") continue;  // the writer adds its own
    auto [data, size] = reader.getRecord(name);
    if (cut.empty() && name.rfind("data/", 0) == 0 && name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      cut = name;
      size = std::min(size, keep);
    }
    writer.writeRecord(name, data.get(), size);
  }
  writer.writeEndOfFile();
  return cut;
}

}  // namespace alexnet::testing
