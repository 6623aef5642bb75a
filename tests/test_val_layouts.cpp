// The official ImageNet validation layouts: one flat folder of images and a labels file
// (FILENAME CLASS lines, Kaggle's LOC_val_solution.csv, the devkit's ground truth with a
// synsets list), for training runs and `alexnet eval`.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "data/labels_file.h"
#include "tests/export_support.h"
#include "tests/support.h"
#include "train/config.h"
#include "train/run_data.h"

namespace test_val_layouts {

namespace fs = std::filesystem;
using alexnet::data::LabelledFolderOptions;
using alexnet::data::LabelsFormat;
using namespace alexnet::testing;

// Three synsets in sorted order: labels 0, 1, 2 of a training folder holding them.
const std::vector<std::string>& synsets() {
  static const std::vector<std::string> names{"n01440764", "n01443537", "n01484850"};
  return names;
}

// Writes a small random colour image (PNG or JPEG by the extension).
void write_image(const fs::path& path, int seed) {
  torch::manual_seed(seed);
  auto pixels = torch::randint(0, 256, {48, 56, 3}, torch::kUInt8);
  REQUIRE(cv::imwrite(path.string(), cv::Mat(48, 56, CV_8UC3, pixels.data_ptr<uint8_t>())));
}

// The devkit's file name of validation image `number`.
std::string val_name(int number, const std::string& extension = ".JPEG") {
  char name[64];
  std::snprintf(name, sizeof(name), "ILSVRC2012_val_%08d%s", number, extension.c_str());
  return name;
}

// A flat folder of images ILSVRC2012_val_00000001.JPEG ... _0000000<count>.JPEG.
fs::path write_flat_folder(const fs::path& root, int count) {
  const fs::path folder = root / "val";
  fs::create_directories(folder);
  for (int i = 1; i <= count; ++i) write_image(folder / val_name(i), i);
  return folder;
}

// (file name, label) of each sample, in the data set's order.
std::vector<std::pair<std::string, int64_t>> samples(const alexnet::data::Dataset& dataset) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (size_t i = 0; i < dataset.size(); ++i) {
    out.emplace_back(fs::path(dataset.sample_source(i)).filename().string(), dataset.label(i));
  }
  return out;
}

// The message of what `open` throws ("" when it throws nothing).
template <typename Open>
std::string error_of(Open open) {
  try {
    open();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// The expected samples of the four-image folder: its labels by name are
// n01484850, n01440764, n01443537, n01484850.
const std::vector<std::pair<std::string, int64_t>>& four_images() {
  static const std::vector<std::pair<std::string, int64_t>> expected{
      {val_name(1), 2}, {val_name(2), 0}, {val_name(3), 1}, {val_name(4), 2}};
  return expected;
}

// The labels of the four-image folder in each form. The devkit's synsets list numbers the
// synsets in another order than the sorted one (ID 1 is n01484850, as the 2012 devkit's ID 1
// is not the first synset in sorted order), so a reader that took IDs as sorted positions
// would give other labels.
struct FourImageLabels {
  fs::path list_names, list_indices, kaggle, devkit, synsets;
};

FourImageLabels write_four_image_labels(const fs::path& root) {
  FourImageLabels files{root / "val_names.txt", root / "val_indices.txt",
                        root / "LOC_val_solution.csv",
                        root / "ILSVRC2012_validation_ground_truth.txt", root / "synsets.txt"};
  write_text(files.list_names, val_name(1) + " n01484850\n" + val_name(2) + " n01440764\n" +
                                   val_name(3) + " n01443537\n" + val_name(4) + " n01484850\n");
  // Indices into the sorted classes, as Caffe's val.txt; the second line without extension.
  write_text(files.list_indices, "# Caffe's val.txt\n" + val_name(1) + " 2\n" + val_name(2, "") +
                                     " 0\r\n" + val_name(3) + "\t1\n" + val_name(4) + " 2\n\n");
  write_text(files.kaggle, "ImageId,PredictionString\n" + val_name(3, "") +
                               ",n01443537 1 2 30 40\n" + val_name(1, "") +
                               ",n01484850 5 5 20 20 n01484850 1 1 9 9\n" + val_name(4, "") +
                               ",n01484850 0 0 10 10\n" + val_name(2, "") + ",n01440764 3 4 5 6\n");
  write_text(files.synsets,
             "n01484850 great white shark\nn01440764 tench, Tinca tinca\nn01443537 goldfish\n");
  write_text(files.devkit, "1\n2\n3\n1\n");
  return files;
}

// A fresh folder `root` holding the four-image flat folder `folder` (root/val) and `files`,
// its labels in every form.
struct FourImageFolder {
  const fs::path root = TempDir().path;
  const fs::path folder = write_flat_folder(root, 4);
  const FourImageLabels files = write_four_image_labels(root);
};

TEST_CASE_METHOD(FourImageFolder,
                 "Each labels file form is detected and labels the flat folder by class name",
                 "[val_layouts]") {
  CHECK(alexnet::data::detect_labels_format(files.list_names.string()) == LabelsFormat::kList);
  CHECK(alexnet::data::detect_labels_format(files.list_indices.string()) == LabelsFormat::kList);
  CHECK(alexnet::data::detect_labels_format(files.kaggle.string()) == LabelsFormat::kKaggle);
  CHECK(alexnet::data::detect_labels_format(files.devkit.string()) == LabelsFormat::kDevkit);

  std::ostringstream warnings;
  LabelledFolderOptions options;
  options.warnings = &warnings;
  for (const auto& labels : {files.list_names, files.list_indices, files.kaggle}) {
    INFO(labels.string());
    const auto set =
        alexnet::data::open_labelled_folder(folder.string(), labels.string(), synsets(), options);
    CHECK(samples(*set) == four_images());
    CHECK(set->class_names() == synsets());
  }
  options.synsets_file = files.synsets.string();
  const auto devkit = alexnet::data::open_labelled_folder(folder.string(), files.devkit.string(),
                                                          synsets(), options);
  CHECK(samples(*devkit) == four_images());
  // The form named explicitly reads the same.
  options.format = LabelsFormat::kDevkit;
  CHECK(samples(*alexnet::data::open_labelled_folder(folder.string(), files.devkit.string(),
                                                     synsets(), options)) == four_images());
  CHECK(warnings.str().empty());
  // The images decode at the requested size.
  CHECK(devkit->get(0).image.sizes().vec() == std::vector<int64_t>{3, 256, 256});
  fs::remove_all(root);
}

TEST_CASE_METHOD(FourImageFolder,
                 "Labels are matched to the training classes by name, not by position",
                 "[val_layouts]") {
  // A training set with one more class before the others: every name keeps its class, so
  // the labels shift by one.
  const std::vector<std::string> more{"n01000000", "n01440764", "n01443537", "n01484850"};
  std::ostringstream warnings;
  LabelledFolderOptions options;
  options.warnings = &warnings;
  const auto set =
      alexnet::data::open_labelled_folder(folder.string(), files.kaggle.string(), more, options);
  for (size_t i = 0; i < set->size(); ++i) CHECK(set->label(i) == four_images()[i].second + 1);
  CHECK(set->class_names() == more);

  // Indices are positions in the training classes' sorted order.
  const auto by_index = alexnet::data::open_labelled_folder(
      folder.string(), files.list_indices.string(), more, options);
  CHECK(by_index->label(0) == 2);
  CHECK(more[static_cast<size_t>(by_index->label(0))] == "n01443537");

  // Where training classes have all-digit names, all-digit labels are names.
  const std::vector<std::string> numbered{"1", "10", "2"};
  write_text(root / "numbered.txt", val_name(1) + " 2\n" + val_name(2) + " 10\n");
  const auto numeric = alexnet::data::open_labelled_folder(
      folder.string(), (root / "numbered.txt").string(), numbered, options);
  REQUIRE(numeric->size() == 2);
  CHECK(numeric->label(0) == 2);
  CHECK(numeric->label(1) == 1);
  CHECK_THAT(warnings.str(), Catch::Contains("2 image files of " + folder.string()));
  fs::remove_all(root);
}

TEST_CASE_METHOD(FourImageFolder,
                 "Labels files with unknown classes, bad lines or repeated images are refused",
                 "[val_layouts]") {
  const std::string labels = (root / "labels.txt").string();
  const auto open = [&](LabelledFolderOptions options = {}) {
    return error_of(
        [&] { alexnet::data::open_labelled_folder(folder.string(), labels, synsets(), options); });
  };

  // A class the training set lacks: named with the file and line.
  write_text(labels, val_name(1) + " n01440764\n" + val_name(2) + " n09999999\n");
  std::string message = open();
  CHECK_THAT(message, Catch::Contains("n09999999") && Catch::Contains(labels + " line 2") &&
                          Catch::Contains("not one of the 3 training classes"));
  // An index past the classes.
  write_text(labels, val_name(1) + " 3\n");
  CHECK_THAT(open(), Catch::Contains("line 1") && Catch::Contains("class index 3") &&
                         Catch::Contains("0 to 2 in sorted order"));
  // A line without a class.
  write_text(labels, val_name(1) + " n01440764\n" + "lonely.JPEG\n");
  CHECK_THAT(open(), Catch::Contains("line 2") && Catch::Contains("FILENAME CLASS"));
  // One image on two lines (once with its extension, once without).
  write_text(labels, val_name(1) + " n01440764\n" + val_name(2) + " n01440764\n" + val_name(1, "") +
                         " n01443537\n");
  CHECK_THAT(open(), Catch::Contains("line 3 and line 1 both label " + val_name(1)));
  // A Kaggle file without its header.
  write_text(labels, val_name(1, "") + ",n01440764 1 2 3 4\n");
  LabelledFolderOptions kaggle;
  kaggle.format = LabelsFormat::kKaggle;
  CHECK_THAT(open(kaggle),
             Catch::Contains("line 1") && Catch::Contains("ImageId,PredictionString"));
  // Kaggle: an ImageId that matches two files.
  write_image(folder / val_name(2, ".png"), 9);
  write_text(labels, "ImageId,PredictionString\n" + val_name(2, "") + ",n01440764 1 2 3 4\n");
  CHECK_THAT(open(), Catch::Contains("line 2") && Catch::Contains("matches 2 files") &&
                         Catch::Contains(val_name(2, ".png")));
  fs::remove(folder / val_name(2, ".png"));

  // The devkit form needs its synsets; IDs past them and synsets the training set lacks are
  // named with both files' lines; a synsets file with another form is refused.
  CHECK_THAT(error_of([&] {
               alexnet::data::open_labelled_folder(folder.string(), files.devkit.string(),
                                                   synsets());
             }),
             Catch::Contains("synsets"));
  write_text(labels, "1\n4\n");
  LabelledFolderOptions devkit;
  devkit.synsets_file = files.synsets.string();
  CHECK_THAT(open(devkit), Catch::Contains(labels + " line 2") && Catch::Contains("ID 4") &&
                               Catch::Contains("3 synsets of " + files.synsets.string()));
  write_text(root / "other_synsets.txt", "n01440764\nn07777777 not trained\n");
  write_text(labels, "1\n2\n");
  devkit.synsets_file = (root / "other_synsets.txt").string();
  CHECK_THAT(open(devkit), Catch::Contains("n07777777") && Catch::Contains(labels + " line 2") &&
                               Catch::Contains("other_synsets.txt line 2"));
  write_text(labels, val_name(1) + " n01440764\n");
  CHECK_THAT(open(devkit), Catch::Contains("only with the devkit form"));
  CHECK_THAT(error_of([] { alexnet::data::parse_labels_format("csv"); }),
             Catch::Contains("'csv'") && Catch::Contains("auto, list, kaggle or devkit"));
  fs::remove_all(root);
}

TEST_CASE_METHOD(
    FourImageFolder,
    "Images missing from the folder or from the labels file are left out with warnings",
    "[val_layouts]") {
  // The folder holds images 1, 2, 4 and an unlabelled one; the labels name 1 to 4.
  fs::remove(folder / val_name(3));
  write_image(folder / "extra.png", 7);
  write_text(folder / "README.txt", "not an image, not counted\n");
  std::ostringstream warnings;
  LabelledFolderOptions options;
  options.warnings = &warnings;
  options.synsets_file = files.synsets.string();
  const auto set = alexnet::data::open_labelled_folder(folder.string(), files.devkit.string(),
                                                       synsets(), options);
  const std::vector<std::pair<std::string, int64_t>> expected{
      {val_name(1), 2}, {val_name(2), 0}, {val_name(4), 2}};
  CHECK(samples(*set) == expected);
  const std::string text = warnings.str();
  INFO(text);
  CHECK_THAT(text, Catch::Contains("1 of the 4 images of labels file") &&
                       Catch::Contains("image 3") && Catch::Contains("evaluating the 3"));
  CHECK_THAT(text, Catch::Contains("1 image files of " + folder.string()) &&
                       Catch::Contains("extra.png") && !Catch::Contains("README"));

  // Nothing labelled at all is an error naming both sides.
  const fs::path empty = root / "other";
  fs::create_directories(empty);
  write_image(empty / "a.png", 1);
  const std::string message = error_of([&] {
    alexnet::data::open_labelled_folder(empty.string(), files.kaggle.string(), synsets());
  });
  CHECK_THAT(message, Catch::Contains("no image file of " + empty.string()) &&
                          Catch::Contains("a.png") && Catch::Contains(val_name(3, "")));

  // A synsets list in sorted order with ImageNet's 1000 entries (LOC_synset_mapping.txt's
  // order) draws a warning: the 2012 devkit's IDs follow meta.mat instead.
  std::ostringstream mapping;
  for (int i = 0; i < 1000; ++i) mapping << "n0" << 1000000 + i << " synset " << i << "\n";
  write_text(root / "LOC_synset_mapping.txt", mapping.str());
  write_text(root / "gt.txt", "1\n");
  std::vector<std::string> thousand;
  for (int i = 0; i < 1000; ++i) thousand.push_back("n0" + std::to_string(1000000 + i));
  warnings.str("");
  options.synsets_file = (root / "LOC_synset_mapping.txt").string();
  alexnet::data::open_labelled_folder(folder.string(), (root / "gt.txt").string(), thousand,
                                      options);
  CHECK_THAT(warnings.str(), Catch::Contains("sorted order") && Catch::Contains("meta.mat"));
  fs::remove_all(root);
}

TEST_CASE_METHOD(FourImageFolder, "A training run validates on a flat folder with a labels file",
                 "[val_layouts]") {
  for (size_t c = 0; c < synsets().size(); ++c) {
    fs::create_directories(root / "train" / synsets()[c]);
    write_image(root / "train" / synsets()[c] / "a.JPEG", static_cast<int>(c) + 20);
  }
  auto json = alexnet::train::to_json(alexnet::train::TrainConfig());
  alexnet::train::set_config_value(json, "data.source", (root / "train").string());
  alexnet::train::set_config_value(json, "data.val_source", folder.string());
  alexnet::train::set_config_value(json, "data.val_labels", files.devkit.string());
  alexnet::train::set_config_value(json, "data.val_synsets", files.synsets.string());
  alexnet::train::set_config_value(json, "data.val_labels_format", "devkit");
  const auto config = alexnet::train::config_from_json(json);
  const auto data = alexnet::train::open_run_data(config.data, config.seed);
  CHECK(data.train->size() == 3);
  CHECK(samples(*data.val) == four_images());
  CHECK(data.val->class_names() == data.train->class_names());

  // Keys that contradict each other are refused, naming them.
  const auto refused = [&](const std::string& key, const std::string& value) {
    auto changed = json;
    alexnet::train::set_config_value(changed, key, value);
    return error_of([&] { alexnet::train::config_from_json(changed); });
  };
  CHECK_THAT(refused("data.val_source", ""), Catch::Contains("'data.val_source'"));
  CHECK_THAT(refused("data.holdout", "2"), Catch::Contains("'data.holdout'"));
  CHECK_THAT(refused("data.val_labels_format", "csv"),
             Catch::Contains("'data.val_labels_format'") && Catch::Contains("kaggle"));
  auto no_labels = json;
  alexnet::train::set_config_value(no_labels, "data.val_labels", "");
  CHECK_THAT(error_of([&] { alexnet::train::config_from_json(no_labels); }),
             Catch::Contains("'data.val_synsets'"));
  fs::remove_all(root);
}

TEST_CASE_METHOD(FourImageFolder, "alexnet eval scores a flat folder with each labels file form",
                 "[val_layouts]") {
  const std::string model = (root / "model.pt").string();
  save_constant_model(model, synsets());  // predicts n01484850
  const std::string eval = std::string(ALEXNET_BINARY) + " eval --model " + model +
                           " --workers 1 --json --data " + folder.string();
  const std::string out = (root / "out.json").string(), err = (root / "err.txt").string();
  const std::vector<std::pair<std::string, std::string>> forms{
      {"list", "--labels " + files.list_names.string()},
      {"list", "--labels " + files.list_indices.string() + " --labels-format list"},
      {"kaggle", "--labels " + files.kaggle.string()},
      {"devkit", "--labels " + files.devkit.string() + " --synsets " + files.synsets.string()}};
  for (const auto& [form, args] : forms) {
    INFO(form << ": " << read_text(err));
    REQUIRE(run_command(eval + " " + args + " >" + out + " 2>" + err) == 0);
    const auto result = nlohmann::json::parse(read_text(out));
    // Two of the four images are n01484850, which the model always predicts.
    CHECK(result.at("samples") == 4);
    CHECK(result.at("top1_error").get<double>() == Approx(0.5));
    CHECK(result.at("per_class").at(2).at("samples") == 2);
    CHECK(result.at("per_class").at(0).at("samples") == 1);
  }
  // --labels without --data, and a class the model lacks, are refused naming them.
  CHECK(run_command(std::string(ALEXNET_BINARY) + " eval --model " + model + " --labels " +
                    files.kaggle.string() + " >/dev/null 2>" + err) == 2);
  CHECK_THAT(read_text(err), Catch::Contains("--labels needs --data"));
  write_text(root / "bad.txt", val_name(1) + " n01440764\n" + val_name(2) + " n02000000\n");
  CHECK(run_command(eval + " --labels " + (root / "bad.txt").string() + " >/dev/null 2>" + err) !=
        0);
  CHECK_THAT(read_text(err), Catch::Contains("n02000000") && Catch::Contains("bad.txt line 2"));
  fs::remove_all(root);
}

}  // namespace test_val_layouts
