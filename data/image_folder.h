#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"

namespace alexnet::data {

/// File name extensions that ImageFolder reads, as torchvision's IMG_EXTENSIONS (compared
/// case-insensitively).
const std::vector<std::string>& image_extensions();
/// `s` with its ASCII letters in lower case.
std::string ascii_lower(std::string s);
/// Whether `filename` ends with one of image_extensions(), ignoring case.
bool has_image_extension(const std::string& filename);
/// The class folders of `root`: its subfolders (symbolic links followed), sorted byte-wise
/// as Python sorts them, so indices match torchvision's ImageFolder. Throws when `root` is
/// missing or has no subfolder.
std::vector<std::string> find_classes(const std::string& root);

/// Images in the ImageNet layout: root/<class>/<image>, files in nested folders belonging to
/// their top-level class folder. The sample order is torchvision's (folders walked in sorted
/// order, files sorted within each), so index i here is index i there. get() decodes with
/// decode_image_file(path, image_size, max_pixels).
class ImageFolder : public Dataset {
 public:
  /// Scans `root`. `classes` empty: find_classes(root), and an empty class folder is an
  /// error naming it. Otherwise labels are indices into `classes` (e.g. the training set's),
  /// every subfolder of `root` must be one of them, and classes may be absent. Entries that
  /// are not regular files after following symbolic links (FIFOs, sockets, devices, dangling
  /// links) are left out, with a warning on stderr for those with an image extension.
  /// max_pixels: see decode_image_file().
  explicit ImageFolder(const std::string& root, int64_t image_size = 256,
                       std::vector<std::string> classes = {},
                       int64_t max_pixels = kDefaultMaxImagePixels);
  /// Reads a list file of "relative/path label" lines (paths relative to `root`; label an
  /// index into `classes` or one of its names; a line starting with '#' is a comment). Errors
  /// name the line: a line without a path or a label, an unknown label, a path listed twice.
  static std::shared_ptr<ImageFolder> from_list(const std::string& list_file,
                                                const std::string& root,
                                                std::vector<std::string> classes,
                                                int64_t image_size = 256,
                                                int64_t max_pixels = kDefaultMaxImagePixels);

  /// The images at `paths` with `labels`, indices into `classes` (a flat validation folder
  /// labelled by a labels file: see data/labels_file.h). Throws std::invalid_argument when the
  /// lists are empty or differ in length, or a label is out of range.
  static std::shared_ptr<ImageFolder> from_files(std::vector<std::string> paths,
                                                 std::vector<int64_t> labels,
                                                 std::vector<std::string> classes,
                                                 int64_t image_size = 256,
                                                 int64_t max_pixels = kDefaultMaxImagePixels);

  size_t size() const override { return paths_.size(); }
  Sample get(size_t index) const override;
  int64_t label(size_t index) const override { return labels_.at(index); }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string sample_source(size_t index) const override { return paths_.at(index); }

  /// The class folder names, by label (class_names() may be human-readable instead).
  const std::vector<std::string>& folder_names() const { return classes_; }
  /// Replaces class_names() from a file (see DatasetOptions::class_names_file). Throws naming
  /// the file and the class folders it misses when it names some folders but not all.
  void load_class_names(const std::string& file);
  const std::vector<std::string>& paths() const { return paths_; }
  int64_t image_size() const { return image_size_; }

 private:
  ImageFolder() = default;

  std::vector<std::string> classes_, names_, paths_;
  std::vector<int64_t> labels_;
  int64_t image_size_ = 256;
  int64_t max_pixels_ = kDefaultMaxImagePixels;
};

}  // namespace alexnet::data
