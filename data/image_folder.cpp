#include "data/image_folder.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "data/image_decode.h"

namespace alexnet::data {
namespace {

namespace fs = std::filesystem;

std::string join(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

bool is_directory(const fs::directory_entry& entry) {
  std::error_code error;
  return entry.is_directory(error);  // follows symbolic links, as os.scandir's is_dir()
}

bool is_regular_file(const fs::directory_entry& entry) {
  std::error_code error;
  return entry.is_regular_file(error);  // follows symbolic links
}

std::string file_kind(const fs::path& path) {
  std::error_code error;
  const auto status = fs::status(path, error);
  if (error == std::errc::too_many_symbolic_link_levels) return "a loop of symbolic links";
  if (error || status.type() == fs::file_type::not_found) return "a dangling symbolic link";
  switch (status.type()) {
    case fs::file_type::fifo:
      return "a FIFO";
    case fs::file_type::socket:
      return "a socket";
    case fs::file_type::block:
    case fs::file_type::character:
      return "a device";
    default:
      return "not a regular file";
  }
}

// os.walk(top, followlinks=True) sorted by folder, files sorted within each folder. Guards
// against symbolic-link cycles, which would make Python recurse forever. Only regular files
// (after following symbolic links) are listed: opening a FIFO would block forever. Others
// with an image extension are named in a warning.
void walk(const std::string& dir,
          std::vector<std::pair<std::string, std::vector<std::string>>>& out,
          std::vector<fs::path>& stack) {
  std::error_code error;
  const fs::path canonical = fs::canonical(dir, error);
  const bool pushed = !error;
  if (pushed) {
    if (std::find(stack.begin(), stack.end(), canonical) != stack.end()) return;
    stack.push_back(canonical);
  }
  std::vector<std::string> files, subdirs;
  fs::directory_iterator it(dir, error);
  if (error) throw std::runtime_error("cannot list folder " + dir + ": " + error.message());
  for (const auto& entry : it) {
    const std::string name = entry.path().filename().string();
    if (is_directory(entry)) {
      subdirs.push_back(name);
    } else if (is_regular_file(entry)) {
      files.push_back(name);
    } else if (has_image_extension(name)) {
      std::cerr << "warning: skipped " << entry.path().string() << ": " << file_kind(entry.path())
                << ", not a regular file\n";
    }
  }
  std::sort(files.begin(), files.end());
  out.emplace_back(dir, std::move(files));
  for (const auto& sub : subdirs) walk(join(dir, sub), out, stack);
  if (pushed) stack.pop_back();
}

}  // namespace

std::string ascii_lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

const std::vector<std::string>& image_extensions() {
  static const std::vector<std::string> extensions{".jpg", ".jpeg", ".png",  ".ppm", ".bmp",
                                                   ".pgm", ".tif",  ".tiff", ".webp"};
  return extensions;
}

bool has_image_extension(const std::string& filename) {
  const std::string name = ascii_lower(filename);
  for (const auto& ext : image_extensions()) {
    if (name.size() >= ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0) {
      return true;
    }
  }
  return false;
}

std::vector<std::string> find_classes(const std::string& root) {
  std::error_code error;
  if (!fs::exists(root, error)) throw std::runtime_error("data folder " + root + " does not exist");
  if (!fs::is_directory(root, error)) throw std::runtime_error(root + " is not a folder");
  std::vector<std::string> classes;
  fs::directory_iterator it(root, error);
  if (error) throw std::runtime_error("cannot list folder " + root + ": " + error.message());
  for (const auto& entry : it) {
    if (is_directory(entry)) classes.push_back(entry.path().filename().string());
  }
  if (classes.empty()) {
    throw std::runtime_error("data folder " + root +
                             " has no class folders (expected ROOT/<class>/<image>)");
  }
  std::sort(classes.begin(), classes.end());  // byte-wise, as Python sorts str
  return classes;
}

ImageFolder::ImageFolder(const std::string& root, int64_t image_size,
                         std::vector<std::string> classes, int64_t max_pixels)
    : image_size_(image_size), max_pixels_(max_pixels) {
  TORCH_CHECK(image_size >= 0, "image size must be >= 0, got ", image_size);
  TORCH_CHECK(max_pixels >= 0, "the pixel limit must be >= 0, got ", max_pixels);
  const bool given = !classes.empty();
  const std::vector<std::string> folders = find_classes(root);
  classes_ = given ? std::move(classes) : folders;
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < classes_.size(); ++i) index[classes_[i]] = static_cast<int64_t>(i);
  std::vector<std::string> empty;
  for (const auto& folder : folders) {
    auto it = index.find(folder);
    if (it == index.end()) {
      throw std::runtime_error("class folder " + join(root, folder) +
                               " is not one of the training set's classes");
    }
    std::vector<std::pair<std::string, std::vector<std::string>>> tree;
    std::vector<fs::path> stack;
    walk(join(root, folder), tree, stack);
    std::sort(tree.begin(), tree.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    const size_t before = paths_.size();
    for (const auto& [dir, files] : tree) {
      for (const auto& file : files) {
        if (!has_image_extension(file)) continue;
        paths_.push_back(join(dir, file));
        labels_.push_back(it->second);
      }
    }
    if (paths_.size() == before) empty.push_back(join(root, folder));
  }
  if (!given && !empty.empty()) {
    std::ostringstream message;
    message << "class folder" << (empty.size() > 1 ? "s " : " ");
    for (size_t i = 0; i < empty.size(); ++i) message << (i ? ", " : "") << empty[i];
    message << " hold" << (empty.size() > 1 ? "" : "s")
            << " no image files (extensions .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp, "
               "any case); remove the folder or add images, so that class indices stay those "
               "of torchvision";
    throw std::runtime_error(message.str());
  }
  if (paths_.empty()) throw std::runtime_error("data folder " + root + " holds no images");
  names_ = classes_;
}

std::shared_ptr<ImageFolder> ImageFolder::from_list(const std::string& list_file,
                                                    const std::string& root,
                                                    std::vector<std::string> classes,
                                                    int64_t image_size, int64_t max_pixels) {
  TORCH_CHECK(!classes.empty(), "list file ", list_file, ": the class list is empty");
  TORCH_CHECK(max_pixels >= 0, "the pixel limit must be >= 0, got ", max_pixels);
  std::ifstream in(list_file);
  if (!in) throw std::runtime_error("cannot read list file " + list_file);
  std::shared_ptr<ImageFolder> set(new ImageFolder());
  set->image_size_ = image_size;
  set->max_pixels_ = max_pixels;
  set->classes_ = std::move(classes);
  set->names_ = set->classes_;
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < set->classes_.size(); ++i)
    index[set->classes_[i]] = static_cast<int64_t>(i);
  std::map<std::string, int64_t> listed;  // path -> its line
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    const auto split = line.find_last_of(" \t");
    auto where = [&] { return list_file + ":" + std::to_string(number); };
    if (split == std::string::npos || split < first) {
      throw std::runtime_error(where() + ": expected \"relative/path label\", got \"" + line +
                               "\"");
    }
    std::string path = line.substr(0, split);
    while (!path.empty() && std::isspace(static_cast<unsigned char>(path.back()))) path.pop_back();
    path.erase(0, path.find_first_not_of(" \t"));
    const std::string label_text = line.substr(split + 1);
    int64_t label = -1;
    if (auto it = index.find(label_text); it != index.end()) {
      label = it->second;
    } else {
      size_t used = 0;
      try {
        label = std::stoll(label_text, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != label_text.size() || label < 0 ||
          label >= static_cast<int64_t>(set->classes_.size())) {
        throw std::runtime_error(where() + ": label \"" + label_text +
                                 "\" is neither a class name nor an index below " +
                                 std::to_string(set->classes_.size()));
      }
    }
    if (!listed.emplace(path, number).second) {
      throw std::runtime_error(where() + ": \"" + path + "\" is listed already, on line " +
                               std::to_string(listed[path]));
    }
    set->paths_.push_back(path.front() == '/' ? path : join(root, path));
    set->labels_.push_back(label);
  }
  if (set->paths_.empty()) throw std::runtime_error("list file " + list_file + " lists no images");
  return set;
}

std::shared_ptr<ImageFolder> ImageFolder::from_files(std::vector<std::string> paths,
                                                     std::vector<int64_t> labels,
                                                     std::vector<std::string> classes,
                                                     int64_t image_size, int64_t max_pixels) {
  TORCH_CHECK(image_size >= 0, "image size must be >= 0, got ", image_size);
  TORCH_CHECK(max_pixels >= 0, "the pixel limit must be >= 0, got ", max_pixels);
  if (paths.empty() || classes.empty() || paths.size() != labels.size()) {
    throw std::invalid_argument(
        "ImageFolder::from_files needs images and classes and one label "
        "per image; got " +
        std::to_string(paths.size()) + " images, " + std::to_string(labels.size()) +
        " labels and " + std::to_string(classes.size()) + " classes");
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= static_cast<int64_t>(classes.size())) {
      throw std::invalid_argument("image " + paths[i] + " has label " + std::to_string(labels[i]) +
                                  ", not an index below " + std::to_string(classes.size()));
    }
  }
  std::shared_ptr<ImageFolder> set(new ImageFolder());
  set->image_size_ = image_size;
  set->max_pixels_ = max_pixels;
  set->classes_ = std::move(classes);
  set->names_ = set->classes_;
  set->paths_ = std::move(paths);
  set->labels_ = std::move(labels);
  return set;
}

void ImageFolder::load_class_names(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read class names file " + file);
  std::vector<std::string> lines;
  std::map<std::string, std::string> by_folder;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    if (line.empty()) continue;
    lines.push_back(line);
    const auto space = line.find_first_of(" \t");
    if (space != std::string::npos) {
      by_folder[line.substr(0, space)] = line.substr(line.find_first_not_of(" \t", space));
    }
  }
  std::vector<std::string> names, missing;
  for (const auto& folder : classes_) {
    auto it = by_folder.find(folder);
    if (it == by_folder.end()) {
      missing.push_back(folder);
    } else {
      names.push_back(it->second);
    }
  }
  if (missing.empty()) {
    names_ = std::move(names);
    return;
  }
  if (names.empty() && lines.size() == classes_.size()) {
    names_ = std::move(lines);  // names no folder: one name per line, in label order
    return;
  }
  std::ostringstream message;
  message << "class names file " << file << " ";
  if (names.empty()) {
    message << "has " << lines.size() << " lines for " << classes_.size()
            << " classes and names no class folder (expected one line per class in label "
               "order, or \"folder name\" lines)";
  } else {
    message << "names some class folders but not ";
    for (size_t i = 0; i < missing.size() && i < 5; ++i) message << (i ? ", " : "") << missing[i];
    if (missing.size() > 5) message << " and " << missing.size() - 5 << " more";
  }
  throw std::runtime_error(message.str());
}

Sample ImageFolder::get(size_t index) const {
  return Sample{decode_image_file(paths_.at(index), image_size_, max_pixels_), labels_.at(index)};
}

}  // namespace alexnet::data
