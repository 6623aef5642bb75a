#include "data/labels_file.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace alexnet::data {
namespace {

namespace fs = std::filesystem;

// A line of a text file: its number (1-based) and its text without the line end, trailing
// white space and, on the first line, a UTF-8 byte order mark.
struct TextLine {
  int64_t number = 0;
  std::string text;
};

std::vector<TextLine> read_text_lines(const std::string& path, const std::string& what) {
  std::error_code error;
  if (fs::is_directory(path, error)) throw std::runtime_error(what + " " + path + " is a folder");
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + what + " " + path);
  std::vector<TextLine> lines;
  std::string text;
  for (int64_t number = 1; std::getline(in, text); ++number) {
    if (number == 1 && text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    lines.push_back({number, std::move(text)});
  }
  return lines;
}

std::string trim_spaces(const std::string& text) {
  const auto begin = text.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(" \t") - begin + 1);
}

bool all_digits(const std::string& text) {
  return !text.empty() && text.size() <= 18 &&
         std::all_of(text.begin(), text.end(),
                     [](unsigned char c) { return std::isdigit(c) != 0; });
}

bool is_comment(const std::string& text) { return trim_spaces(text).rfind('#', 0) == 0; }

std::string first_word(const std::string& text) {
  const std::string trimmed = trim_spaces(text);
  return trimmed.substr(0, trimmed.find_first_of(" \t"));
}

std::string some_of(const std::vector<std::string>& items, size_t shown) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < shown; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > shown) out += " and " + std::to_string(items.size() - shown) + " more";
  return out;
}

const char* const kKaggleHeader = "ImageId,PredictionString";

// Class names to training labels; a label that is not a class is an error naming it.
class ClassLookup {
 public:
  explicit ClassLookup(const std::vector<std::string>& classes) : classes_(classes) {
    if (classes.empty()) throw std::invalid_argument("the list of training classes is empty");
    for (size_t i = 0; i < classes.size(); ++i) index_[classes[i]] = static_cast<int64_t>(i);
    numeric_names_ = std::any_of(classes.begin(), classes.end(), all_digits);
  }

  // A class name, or (allow_index) an index into the training classes.
  int64_t label(const std::string& text, bool allow_index, const std::string& where) const {
    if (auto it = index_.find(text); it != index_.end()) return it->second;
    if (allow_index && !numeric_names_ && all_digits(text)) {
      const int64_t index = std::stoll(text);
      if (index < static_cast<int64_t>(classes_.size())) return index;
      throw std::runtime_error(where + ": class index " + text + " is out of range: the " +
                               std::to_string(classes_.size()) +
                               " training classes have indices 0 to " +
                               std::to_string(classes_.size() - 1) + " in sorted order");
    }
    throw std::runtime_error(where + ": class '" + text + "' is not one of the " +
                             std::to_string(classes_.size()) + " training classes (" +
                             some_of(classes_, 5) + ")");
  }

 private:
  const std::vector<std::string>& classes_;
  std::map<std::string, int64_t> index_;
  bool numeric_names_ = false;
};

std::vector<LabelledImage> read_list(const std::string& path, const std::vector<TextLine>& lines,
                                     const ClassLookup& lookup) {
  std::vector<LabelledImage> images;
  for (const auto& line : lines) {
    if (line.text.empty() || is_comment(line.text)) continue;
    const std::string where = "labels file " + path + " line " + std::to_string(line.number);
    const std::string text = trim_spaces(line.text);
    const auto split = text.find_last_of(" \t");
    if (split == std::string::npos) {
      throw std::runtime_error(where + ": expected \"FILENAME CLASS\", got \"" + text + "\"");
    }
    const std::string image = trim_spaces(text.substr(0, split));
    images.push_back(
        {image, lookup.label(text.substr(split + 1), /*allow_index=*/true, where), line.number});
  }
  return images;
}

std::vector<LabelledImage> read_kaggle(const std::string& path, const std::vector<TextLine>& lines,
                                       const ClassLookup& lookup) {
  std::vector<LabelledImage> images;
  bool header = false;
  for (const auto& line : lines) {
    if (line.text.empty()) continue;
    const std::string where = "labels file " + path + " line " + std::to_string(line.number);
    if (!header) {
      if (trim_spaces(line.text) != kKaggleHeader) {
        throw std::runtime_error(where + ": expected the header \"" + kKaggleHeader +
                                 "\" of Kaggle's LOC_val_solution.csv, got \"" + line.text + "\"");
      }
      header = true;
      continue;
    }
    const auto comma = line.text.find(',');
    const std::string image =
        trim_spaces(comma == std::string::npos ? line.text : line.text.substr(0, comma));
    const std::string synset =
        comma == std::string::npos ? "" : first_word(line.text.substr(comma + 1));
    if (image.empty() || synset.empty()) {
      throw std::runtime_error(where + ": expected \"ImageId,SYNSET ...\", got \"" + line.text +
                               "\"");
    }
    images.push_back({image, lookup.label(synset, /*allow_index=*/false, where), line.number});
  }
  return images;
}

std::vector<LabelledImage> read_devkit(const std::string& path, const std::vector<TextLine>& lines,
                                       const ClassLookup& lookup, const std::string& synsets_file) {
  if (synsets_file.empty()) {
    throw std::runtime_error("labels file " + path +
                             " is the devkit's ground truth (one ILSVRC ID per line), which "
                             "needs the synsets in ID order (data.val_synsets, --synsets)");
  }
  std::vector<TextLine> synsets;
  for (auto& line : read_text_lines(synsets_file, "synsets file")) {
    if (line.text.empty()) continue;
    synsets.push_back({line.number, first_word(line.text)});
  }
  if (synsets.empty()) throw std::runtime_error("synsets file " + synsets_file + " is empty");
  std::vector<LabelledImage> images;
  int64_t last = 0;
  for (const auto& line : lines) {
    if (!line.text.empty()) last = line.number;
  }
  for (const auto& line : lines) {
    if (line.number > last) break;
    const std::string where = "labels file " + path + " line " + std::to_string(line.number);
    const std::string text = trim_spaces(line.text);
    if (!all_digits(text)) {
      throw std::runtime_error(
          where + ": expected an ILSVRC ID (line n holds the ID of image n), got \"" + text + "\"");
    }
    const int64_t id = std::stoll(text);
    if (id < 1 || id > static_cast<int64_t>(synsets.size())) {
      throw std::runtime_error(where + ": ID " + text + " is not between 1 and the " +
                               std::to_string(synsets.size()) + " synsets of " + synsets_file);
    }
    const auto& synset = synsets[static_cast<size_t>(id - 1)];
    images.push_back({std::to_string(line.number),
                      lookup.label(synset.text, /*allow_index=*/false,
                                   where + " (ID " + text + ", " + synsets_file + " line " +
                                       std::to_string(synset.number) + ")"),
                      line.number});
  }
  return images;
}

// A list of synsets sorted by name, as LOC_synset_mapping.txt lists ImageNet's 1000.
bool looks_like_sorted_mapping(const std::string& synsets_file) {
  std::vector<std::string> words;
  for (const auto& line : read_text_lines(synsets_file, "synsets file")) {
    if (!line.text.empty()) words.push_back(first_word(line.text));
  }
  return words.size() >= 1000 && std::is_sorted(words.begin(), words.end());
}

std::string file_stem(const std::string& name) { return fs::path(name).stem().string(); }

// The image's number in the devkit's naming: the digits after the last '_' of its stem.
bool devkit_number(const std::string& name, std::string& number) {
  const std::string stem = file_stem(name);
  const auto underscore = stem.find_last_of('_');
  const std::string digits = underscore == std::string::npos ? stem : stem.substr(underscore + 1);
  if (!all_digits(digits)) return false;
  number = std::to_string(std::stoll(digits));
  return true;
}

// The image files directly in `folder` (regular files after following links), sorted.
std::vector<std::string> flat_image_files(const std::string& folder) {
  std::error_code error;
  if (!fs::is_directory(folder, error)) {
    throw std::runtime_error("image folder " + folder + " does not exist or is not a folder");
  }
  std::vector<std::string> names;
  fs::directory_iterator it(folder, error);
  if (error) throw std::runtime_error("cannot list folder " + folder + ": " + error.message());
  for (const auto& entry : it) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file(error) && has_image_extension(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

namespace {

// Each form with the name parse_labels_format reads.
constexpr std::pair<LabelsFormat, const char*> kLabelsFormatNames[] = {
    {LabelsFormat::kAuto, "auto"},
    {LabelsFormat::kList, "list"},
    {LabelsFormat::kKaggle, "kaggle"},
    {LabelsFormat::kDevkit, "devkit"}};

}  // namespace

LabelsFormat parse_labels_format(const std::string& name) {
  for (const auto& [format, text] : kLabelsFormatNames) {
    if (name == text) return format;
  }
  throw std::invalid_argument("unknown labels file form '" + name +
                              "' (expected auto, list, kaggle or devkit)");
}

std::string labels_format_name(LabelsFormat format) {
  for (const auto& [value, text] : kLabelsFormatNames) {
    if (value == format) return text;
  }
  return "auto";
}

LabelsFormat detect_labels_format(const std::string& path) {
  bool any = false, numbers = true;
  for (const auto& line : read_text_lines(path, "labels file")) {
    if (line.text.empty()) continue;
    if (!any && trim_spaces(line.text) == kKaggleHeader) return LabelsFormat::kKaggle;
    any = true;
    numbers = numbers && all_digits(trim_spaces(line.text));
  }
  if (!any) throw std::runtime_error("labels file " + path + " is empty");
  return numbers ? LabelsFormat::kDevkit : LabelsFormat::kList;
}

LabelsFile read_labels_file(const std::string& path, const std::vector<std::string>& classes,
                            LabelsFormat format, const std::string& synsets_file) {
  LabelsFile file;
  file.format = format == LabelsFormat::kAuto ? detect_labels_format(path) : format;
  if (file.format != LabelsFormat::kDevkit && !synsets_file.empty()) {
    throw std::invalid_argument("synsets file " + synsets_file +
                                " is read only with the devkit form, but labels file " + path +
                                " is in the " + labels_format_name(file.format) + " form");
  }
  const ClassLookup lookup(classes);
  const auto lines = read_text_lines(path, "labels file");
  switch (file.format) {
    case LabelsFormat::kKaggle:
      file.images = read_kaggle(path, lines, lookup);
      break;
    case LabelsFormat::kDevkit:
      file.images = read_devkit(path, lines, lookup, synsets_file);
      break;
    default:
      file.images = read_list(path, lines, lookup);
      break;
  }
  if (file.images.empty()) throw std::runtime_error("labels file " + path + " labels no image");
  return file;
}

namespace {

// The label of each of `files` (images of `folder`) that `labels` names, else -1; the images
// `labels` names that are not among them go to `missing`. Throws naming the line where an
// image matches several files or two lines label the same file.
std::vector<int64_t> match_labels(const std::string& folder, const std::vector<std::string>& files,
                                  const LabelsFile& labels, const std::string& labels_file,
                                  std::vector<std::string>& missing) {
  // How a labels file names each image file: by name, by stem (Kaggle, or a list without
  // extensions) and by number (the devkit).
  std::map<std::string, size_t> by_name;
  std::map<std::string, std::vector<size_t>> by_key;
  for (size_t i = 0; i < files.size(); ++i) {
    by_name[files[i]] = i;
    std::string key = file_stem(files[i]);
    if (labels.format == LabelsFormat::kDevkit && !devkit_number(files[i], key)) continue;
    by_key[key].push_back(i);
  }
  std::vector<int64_t> label_of(files.size(), -1), line_of(files.size(), 0);
  for (const auto& entry : labels.images) {
    const std::string where = "labels file " + labels_file + " line " + std::to_string(entry.line);
    size_t file = 0;
    if (auto it = by_name.find(entry.image);
        labels.format == LabelsFormat::kList && it != by_name.end()) {
      file = it->second;
    } else if (auto key = by_key.find(entry.image); key != by_key.end()) {
      if (key->second.size() > 1) {
        std::vector<std::string> names;
        for (size_t i : key->second) names.push_back(files[i]);
        throw std::runtime_error(where + ": image '" + entry.image + "' matches " +
                                 std::to_string(names.size()) + " files of " + folder + ": " +
                                 some_of(names, 5));
      }
      file = key->second.front();
    } else {
      missing.push_back(labels.format == LabelsFormat::kDevkit ? "image " + entry.image
                                                               : entry.image);
      continue;
    }
    if (line_of[file] != 0) {
      throw std::runtime_error(where + " and line " + std::to_string(line_of[file]) +
                               " both label " + files[file]);
    }
    label_of[file] = entry.label;
    line_of[file] = entry.line;
  }
  return label_of;
}

}  // namespace

std::shared_ptr<ImageFolder> open_labelled_folder(const std::string& folder,
                                                  const std::string& labels_file,
                                                  const std::vector<std::string>& classes,
                                                  const LabelledFolderOptions& options) {
  const LabelsFile labels =
      read_labels_file(labels_file, classes, options.format, options.synsets_file);
  std::ostream& warnings = options.warnings ? *options.warnings : std::cerr;
  if (labels.format == LabelsFormat::kDevkit && looks_like_sorted_mapping(options.synsets_file)) {
    warnings << "warning: synsets file " << options.synsets_file
             << " lists its synsets in sorted order, as LOC_synset_mapping.txt does; the "
                "ILSVRC2012 devkit numbers them in the order of its meta.mat (ID 1 is n02119789), "
                "so with this file the labels are wrong unless the IDs of "
             << labels_file << " follow sorted order\n";
  }

  const std::vector<std::string> files = flat_image_files(folder);
  std::vector<std::string> missing;
  const std::vector<int64_t> label_of = match_labels(folder, files, labels, labels_file, missing);
  std::vector<std::string> paths, unlabelled;
  std::vector<int64_t> sample_labels;
  for (size_t i = 0; i < files.size(); ++i) {
    if (label_of[i] < 0) {
      unlabelled.push_back(files[i]);
      continue;
    }
    paths.push_back((fs::path(folder) / files[i]).string());
    sample_labels.push_back(label_of[i]);
  }
  if (paths.empty()) {
    throw std::runtime_error("no image file of " + folder + " is labelled by " + labels_file +
                             " (" + labels_format_name(labels.format) + " form; it names " +
                             some_of(missing, 3) + "; the folder holds " +
                             (files.empty() ? std::string("no image files") : some_of(files, 3)) +
                             ")");
  }
  if (!missing.empty()) {
    warnings << "warning: " << missing.size() << " of the " << labels.images.size()
             << " images of labels file " << labels_file << " are not in " << folder << " ("
             << some_of(missing, 3) << "); evaluating the " << paths.size() << " that are\n";
  }
  if (!unlabelled.empty()) {
    warnings << "warning: " << unlabelled.size() << " image files of " << folder
             << " are not in labels file " << labels_file << " (" << some_of(unlabelled, 3)
             << "); they are left out\n";
  }
  return ImageFolder::from_files(std::move(paths), std::move(sample_labels), classes,
                                 options.image_size, options.max_image_pixels);
}

}  // namespace alexnet::data
