// Validation sets in the official ImageNet layout: one flat folder of images and a labels file.
#pragma once

#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image_folder.h"

namespace alexnet::data {

/// The forms of a labels file for a flat folder of images.
enum class LabelsFormat {
  /// Judged from the content (see detect_labels_format).
  kAuto,
  /// "FILENAME CLASS" lines (split at the last space or tab). FILENAME is a file of the folder,
  /// with or without its extension. CLASS is a training class name (a synset such as
  /// n01440764), or an index into the training classes in their sorted order (the label the
  /// training run gives the class, as in Caffe's val.txt); all-digit labels are names when
  /// some training class has an all-digit name. Lines starting with '#' are comments.
  kList,
  /// Kaggle's LOC_val_solution.csv: the header "ImageId,PredictionString", then lines
  /// "ILSVRC2012_val_00008726,n02119789 255 142 454 329 ...": the ImageId is the file name
  /// without its extension, the class the first word of the prediction string.
  kKaggle,
  /// The devkit's ILSVRC2012_validation_ground_truth.txt: line n holds the ILSVRC ID (1-based)
  /// of the image numbered n (ILSVRC2012_val_0000000n.JPEG: the digits after the last '_' of
  /// the file name), and a synsets file maps ID i to the synset on its line i (first word of
  /// the line). The IDs of the 2012 devkit follow its meta.mat (ID 1 is n02119789), not the
  /// sorted order of LOC_synset_mapping.txt.
  kDevkit,
};

/// "auto", "list", "kaggle" or "devkit"; throws std::invalid_argument naming `name` otherwise.
LabelsFormat parse_labels_format(const std::string& name);
/// The name parse_labels_format() reads.
std::string labels_format_name(LabelsFormat format);

/// The form of the labels file at `path` judged from its content: kKaggle when its first line
/// is "ImageId,PredictionString", kDevkit when every line is a number, else kList. Throws
/// std::runtime_error naming the file when it cannot be read or holds no line.
LabelsFormat detect_labels_format(const std::string& path);

/// One image as a labels file names it.
struct LabelledImage {
  /// kList: the file name as written (with or without extension); kKaggle: the ImageId;
  /// kDevkit: the image's number in decimal ("1" for ILSVRC2012_val_00000001.JPEG).
  std::string image;
  /// Index into the training classes.
  int64_t label = 0;
  /// Line of the labels file (1-based).
  int64_t line = 0;
};

/// What read_labels_file read.
struct LabelsFile {
  /// The form read (never kAuto).
  LabelsFormat format = LabelsFormat::kList;
  std::vector<LabelledImage> images;
};

/// Reads a labels file with its labels as indices into `classes` (the training classes in
/// label order), matched by name. `synsets_file` is needed for kDevkit and refused otherwise.
/// Throws std::runtime_error naming the file and line of a malformed line, of a class that is
/// not among `classes` (naming it) or of an ID without a synset.
LabelsFile read_labels_file(const std::string& path, const std::vector<std::string>& classes,
                            LabelsFormat format = LabelsFormat::kAuto,
                            const std::string& synsets_file = "");

/// How open_labelled_folder reads a folder and its labels file.
struct LabelledFolderOptions {
  LabelsFormat format = LabelsFormat::kAuto;
  /// kDevkit: the synsets in ID order, one per line (first word of each line).
  std::string synsets_file;
  /// As ImageFolder's: shorter side rescaled to this, central square kept (0: as is).
  int64_t image_size = 256;
  int64_t max_image_pixels = kDefaultMaxImagePixels;
  /// Where warnings go (images left out).
  std::ostream* warnings = &std::cerr;
};

/// The image files of `folder` (image extensions, not its subfolders) labelled by
/// `labels_file`, in sorted file-name order, with `classes` as class names. An image the
/// labels file lists twice (or two of its lines naming one file, or two files matching one
/// line) is an error naming the lines or files. Image files the labels file does not list,
/// and listed images the folder lacks, are left out with a warning that counts them and names
/// a few (a folder holding part of the official set evaluates that part); nothing left is an
/// error. Throws std::runtime_error naming the folder or file.
std::shared_ptr<ImageFolder> open_labelled_folder(const std::string& folder,
                                                  const std::string& labels_file,
                                                  const std::vector<std::string>& classes,
                                                  const LabelledFolderOptions& options = {});

}  // namespace alexnet::data
