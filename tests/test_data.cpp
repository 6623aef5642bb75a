// Tests of data/: class order, image decoding, bad input, IDX, packed files, statistics.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#if ALEXNET_WITH_ZLIB
#include <zlib.h>
#endif

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/idx.h"
#include "data/image_decode.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/packed.h"
#include "tests/app_support.h"
#include "tests/data_support.h"
#include "tests/support.h"

#if ALEXNET_WITH_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace test_data {

using namespace alexnet::data;
namespace fs = std::filesystem;
using namespace alexnet::testing;

namespace {

std::vector<uint8_t> big_endian(std::initializer_list<uint32_t> values) {
  std::vector<uint8_t> out;
  for (uint32_t v : values) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
  }
  return out;
}

// IDX files of n rows x cols images, pixel (i, y, x) = i * 10 + y * cols + x, label i % 10.
void write_idx(const std::string& dir, const std::string& prefix, uint32_t n, uint32_t rows,
               uint32_t cols, bool gzip) {
  auto images = big_endian({0x803, n, rows, cols});
  for (uint32_t i = 0; i < n; ++i) {
    for (uint32_t p = 0; p < rows * cols; ++p) images.push_back(static_cast<uint8_t>(i * 10 + p));
  }
  auto labels = big_endian({0x801, n});
  for (uint32_t i = 0; i < n; ++i) labels.push_back(static_cast<uint8_t>(i % 10));
  auto write = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string path = dir + "/" + prefix + name + (gzip ? ".gz" : "");
    if (!gzip) return write_bytes(path, bytes);
#if ALEXNET_WITH_ZLIB
    fs::create_directories(dir);
    gzFile file = gzopen(path.c_str(), "wb");
    gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(file);
#else
    FAIL("this build has no zlib to write " << path);
#endif
  };
  write("-images-idx3-ubyte", images);
  write("-labels-idx1-ubyte", labels);
}

#if ALEXNET_WITH_OPENCV
bool write_image(const std::string& path, const cv::Mat& image,
                 const std::vector<int>& params = {}) {
  fs::create_directories(fs::path(path).parent_path());
  return cv::imwrite(path, image, params);
}
#endif

// A packed file of three 2x2 RGB images with labels 0, 1, 2 and statistics.
void write_small_pack(const std::string& path, int64_t channels = 3) {
  PackedWriter writer(path, channels, 2, 2);
  StatsAccumulator stats;
  for (int i = 0; i < 3; ++i) {
    const auto image = torch::full({channels, 2, 2}, 40 * i + 10, torch::kByte);
    writer.add(image, i);
    if (channels == 3) stats.add(image);
  }
  writer.finish({"a", "b", "c"},
                channels == 3 ? std::optional<DatasetStats>(stats.finish()) : std::nullopt,
                {{"split", "train"}});
}

// Starts the alexnet executable with `args`, its stdout and stderr going to `log`.
pid_t start_alexnet(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    std::vector<char*> argv{const_cast<char*>(ALEXNET_BINARY)};
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    execv(ALEXNET_BINARY, argv.data());
    _exit(127);
  }
  return pid;
}

// The exit status of `pid` as a shell reports it: 128 + N when signal N ended it.
int wait_for(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

int run_alexnet(const std::vector<std::string>& args, const std::string& log) {
  return wait_for(start_alexnet(args, log));
}

// Labels given per sample; images are 1x1 and never read.
class LabelledDataset : public Dataset {
 public:
  explicit LabelledDataset(std::vector<int64_t> labels, size_t classes)
      : labels_(std::move(labels)), names_(classes, "class") {}
  size_t size() const override { return labels_.size(); }
  Sample get(size_t index) const override {
    return Sample{torch::zeros({3, 1, 1}, torch::kByte), labels_.at(index)};
  }
  int64_t label(size_t index) const override { return labels_.at(index); }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string sample_source(size_t index) const override {
    return "labelled#" + std::to_string(index);
  }

 private:
  std::vector<int64_t> labels_;
  std::vector<std::string> names_;
};

// Images of `channels` x 2 x 2; image `throws_at` throws a plain std::runtime_error.
class OddDataset : public LabelledDataset {
 public:
  OddDataset(int64_t channels, size_t throws_at)
      : LabelledDataset(std::vector<int64_t>(40, 0), 1),
        channels_(channels),
        throws_at_(throws_at) {}
  Sample get(size_t index) const override {
    if (index == throws_at_) throw std::runtime_error("odd#" + std::to_string(index) + " broke");
    return Sample{torch::zeros({channels_, 2, 2}, torch::kByte), 0};
  }

 private:
  int64_t channels_;
  size_t throws_at_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Image folders

TEST_CASE("Class folders sort byte-wise, as torchvision's ImageFolder", "[data]") {
  TempDir dir;
  const std::vector<std::string> names{"b", "B", "a", "A", "10", "2", "_x", "Zeta", "alpha", "a b"};
  for (const auto& name : names) write_text(dir / (name + "/img.png"), "x");
  auto expected = names;
  std::sort(expected.begin(), expected.end());
  CHECK(find_classes(dir.path.string()) ==
        std::vector<std::string>{"10", "2", "A", "B", "Zeta", "_x", "a", "a b", "alpha", "b"});
  CHECK(find_classes(dir.path.string()) == expected);
  ImageFolder folder(dir.path.string());
  REQUIRE(folder.size() == names.size());
  for (size_t i = 0; i < folder.size(); ++i) {
    CHECK(fs::path(folder.sample_source(i)).parent_path().filename() == expected[folder.label(i)]);
  }
}

TEST_CASE("Image extensions are matched case-insensitively; nested folders belong to the class",
          "[data]") {
  CHECK(has_image_extension("a.JPG"));
  CHECK(has_image_extension("a.JpEg"));
  CHECK(has_image_extension("a.webp"));
  CHECK(has_image_extension("a.TIFF"));
  CHECK_FALSE(has_image_extension("a.txt"));
  CHECK_FALSE(has_image_extension("jpg"));
  CHECK_FALSE(has_image_extension("a.jpg.bak"));
  TempDir dir;
  for (const char* file :
       {"cat/x.JPG", "cat/y.Png", "cat/z.jpeg", "cat/notes.txt", "cat/sub/deep.bmp",
        "cat/sub/inner/i.png", "cat/sub-b/w.png", "dog/Q.PNG"}) {
    write_text(dir / file, "x");
  }
  ImageFolder folder(dir.path.string());
  std::vector<std::string> relative;
  for (const auto& path : folder.paths()) {
    relative.push_back(fs::relative(path, dir.path).string());
  }
  // os.walk's folders sorted by path: "cat/sub" < "cat/sub-b" < "cat/sub/inner" ('-' < '/').
  CHECK(relative == std::vector<std::string>{"cat/x.JPG", "cat/y.Png", "cat/z.jpeg",
                                             "cat/sub/deep.bmp", "cat/sub-b/w.png",
                                             "cat/sub/inner/i.png", "dog/Q.PNG"});
  CHECK(folder.label(5) == 0);
  CHECK(folder.label(6) == 1);
}

TEST_CASE("Class indices and sample order match torchvision (via /usr/bin/python3)",
          "[data][python]") {
  if (skip_without_python("torchvision")) return;
  TempDir dir;
  const std::string root = dir / "root";
  for (const char* file :
       {"b/1.jpg", "B/2.PNG", "a/sub/3.png", "a/4.JPEG", "A/5.bmp", "10/6.png", "2/7.ppm",
        "_x/8.tif", "a b/9.webp", "a/skip.txt", "Zeta/z-1.png", "Zeta/Z.png", "Zeta/sub-b/x.png",
        "Zeta/sub/in/y.png", "Zeta/sub/v.png"}) {
    write_text(root + "/" + file, "x");
  }
  const std::string script = dir / "list.py";
  const std::string out = dir / "out.json";
  write_text(script,
             "import json, sys\n"
             "from torchvision.datasets import ImageFolder\n"
             "ds = ImageFolder(sys.argv[1], loader=lambda p: p)\n"
             "json.dump({'classes': ds.classes, 'samples': ds.samples}, open(sys.argv[2], 'w'))\n");
  REQUIRE(std::system(("/usr/bin/python3 " + script + " " + root + " " + out).c_str()) == 0);
  const auto expected = nlohmann::json::parse(read_bytes(out));
  ImageFolder folder(root);
  CHECK(folder.class_names() == expected["classes"].get<std::vector<std::string>>());
  REQUIRE(folder.size() == expected["samples"].size());
  for (size_t i = 0; i < folder.size(); ++i) {
    CHECK(fs::path(folder.sample_source(i)).lexically_normal() ==
          fs::path(expected["samples"][i][0].get<std::string>()).lexically_normal());
    CHECK(folder.label(i) == expected["samples"][i][1].get<int64_t>());
  }
}

TEST_CASE("Missing roots and empty class folders are refused with their names", "[data]") {
  TempDir dir;
  CHECK_THROWS_WITH(ImageFolder(dir / "nowhere"),
                    Catch::Contains("nowhere") && Catch::Contains("does not exist"));
  CHECK_THROWS_WITH(open_dataset(dir / "nowhere", "train"), Catch::Contains("nowhere"));
  write_text(dir / "root/full/a.png", "x");
  fs::create_directories(dir / "root/empty");
  write_text(dir / "root/textonly/readme.txt", "x");
  CHECK_THROWS_WITH(ImageFolder(dir / "root"), Catch::Contains("root/empty") &&
                                                   Catch::Contains("root/textonly") &&
                                                   Catch::Contains("no image files"));
  fs::create_directories(dir / "noclasses");
  CHECK_THROWS_WITH(ImageFolder(dir / "noclasses"), Catch::Contains("no class folders"));
}

TEST_CASE("Validation data: a split folder or a list file, labelled with the training classes",
          "[data]") {
  TempDir dir;
  for (const char* file : {"train/ant/1.png", "train/bee/2.png", "train/cat/3.png", "val/cat/4.png",
                           "val/ant/5.png"}) {
    write_text(dir / file, "x");
  }
  auto val = open_dataset(dir.path.string(), "val");
  REQUIRE(val->size() == 2);
  CHECK(val->label(0) == 0);  // ant
  CHECK(val->label(1) == 2);  // cat keeps its training index although bee is absent
  CHECK(open_dataset(dir.path.string(), "train")->size() == 3);

  write_text(dir / "list/val.txt", "# path label\nimgs/a 1.png 2\nimgs/b.png bee\n\n");
  DatasetOptions options;
  options.split = "val";
  options.val_source = dir / "list/val.txt";
  auto listed = open_dataset(dir.path.string(), options);
  REQUIRE(listed->size() == 2);
  CHECK(listed->sample_source(0) == dir / "list/imgs/a 1.png");
  CHECK(listed->label(0) == 2);
  CHECK(listed->label(1) == 1);
  CHECK(listed->class_names() == std::vector<std::string>{"ant", "bee", "cat"});
  write_text(dir / "list/bad.txt", "imgs/a.png 3\n");
  options.val_source = dir / "list/bad.txt";
  CHECK_THROWS_WITH(open_dataset(dir.path.string(), options),
                    Catch::Contains("bad.txt:1") && Catch::Contains("\"3\""));
  // '#' inside a name is part of it; a line without a path and a path listed twice are errors.
  write_text(dir / "list/hash.txt", "  # a comment\nimgs/c#1.png cat\n");
  options.val_source = dir / "list/hash.txt";
  auto hashed = open_dataset(dir.path.string(), options);
  REQUIRE(hashed->size() == 1);
  CHECK(hashed->sample_source(0) == dir / "list/imgs/c#1.png");
  write_text(dir / "list/nopath.txt", "imgs/b.png bee\n 1\n");
  options.val_source = dir / "list/nopath.txt";
  CHECK_THROWS_WITH(open_dataset(dir.path.string(), options),
                    Catch::Contains("nopath.txt:2") && Catch::Contains("expected"));
  write_text(dir / "list/twice.txt", "imgs/b.png bee\nimgs/c.png 0\nimgs/b.png bee\n");
  options.val_source = dir / "list/twice.txt";
  CHECK_THROWS_WITH(open_dataset(dir.path.string(), options),
                    Catch::Contains("twice.txt:3") && Catch::Contains("line 1"));
  options.val_source.clear();
  write_text(dir / "val/dog/6.png", "x");
  CHECK_THROWS_WITH(open_dataset(dir.path.string(), "val"), Catch::Contains("val/dog"));

  write_text(dir / "names.txt", "cat Felis catus\nant Formicidae\nbee Apis\n");
  options.val_source.clear();
  options.split = "train";
  options.class_names_file = dir / "names.txt";
  CHECK(open_dataset(dir.path.string(), options)->class_names() ==
        std::vector<std::string>{"Formicidae", "Apis", "Felis catus"});
}

#if ALEXNET_WITH_OPENCV

TEST_CASE("Decoding gives 8-bit RGB for colour, grey, 16-bit and alpha images", "[data][decode]") {
  TempDir dir;
  cv::Mat bgr(4, 5, CV_8UC3);
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 5; ++x) bgr.at<cv::Vec3b>(y, x) = cv::Vec3b(x * 10, y * 20, 200);
  }
  REQUIRE(write_image(dir / "colour.png", bgr));
  auto rgb = decode_image_file(dir / "colour.png", 0);
  REQUIRE(rgb.sizes() == c10::IntArrayRef({3, 4, 5}));
  CHECK(rgb.scalar_type() == torch::kByte);
  CHECK(rgb[0][2][3].item<int>() == 200);  // R
  CHECK(rgb[1][2][3].item<int>() == 40);   // G
  CHECK(rgb[2][2][3].item<int>() == 30);   // B

  cv::Mat grey(3, 3, CV_8UC1, cv::Scalar(77));
  grey.at<uint8_t>(1, 1) = 9;
  REQUIRE(write_image(dir / "grey.png", grey));
  auto g = decode_image_file(dir / "grey.png", 0);
  REQUIRE(g.sizes() == c10::IntArrayRef({3, 3, 3}));
  for (int c = 0; c < 3; ++c) {
    CHECK(g[c][0][0].item<int>() == 77);
    CHECK(g[c][1][1].item<int>() == 9);
  }

  cv::Mat deep(2, 2, CV_16UC3, cv::Scalar(100 * 257, 50 * 257, 255 * 257));
  REQUIRE(write_image(dir / "deep.png", deep));
  auto d = decode_image_file(dir / "deep.png", 0);
  CHECK(d[0][0][0].item<int>() == 255);
  CHECK(d[1][0][0].item<int>() == 50);
  CHECK(d[2][0][0].item<int>() == 100);

  cv::Mat alpha(2, 2, CV_8UC4, cv::Scalar(10, 20, 30, 0));  // transparent: colour kept (as PIL)
  REQUIRE(write_image(dir / "alpha.png", alpha));
  auto a = decode_image_file(dir / "alpha.png", 0);
  REQUIRE(a.size(0) == 3);
  CHECK(a[0][1][1].item<int>() == 30);
  CHECK(a[2][1][1].item<int>() == 10);

  cv::Mat grey16(2, 2, CV_16UC1, cv::Scalar(1000 * 60));
  REQUIRE(write_image(dir / "grey16.png", grey16));
  auto g16 = decode_image_file(dir / "grey16.png", 0);
  CHECK(g16.sizes() == c10::IntArrayRef({3, 2, 2}));
  CHECK(g16[1][0][0].item<int>() == (60000 >> 8));
}

TEST_CASE("CMYK JPEGs decode to the RGB PIL gives (via /usr/bin/python3)",
          "[data][decode][python]") {
  if (skip_without_python("torchvision")) return;
  TempDir dir;
  const std::string script = dir / "cmyk.py";
  write_text(script,
             "import sys\nfrom PIL import Image\n"
             "im = Image.new('CMYK', (16, 16), (20, 120, 200, 30))\n"
             "im.save(sys.argv[1], quality=95)\n"
             "print(*Image.open(sys.argv[1]).convert('RGB').getpixel((8, 8)))\n");
  const std::string expected_file = dir / "expected.txt";
  REQUIRE(
      std::system(("/usr/bin/python3 " + script + " " + dir / "cmyk.jpg" + " > " + expected_file)
                      .c_str()) == 0);
  int r = 0, g = 0, b = 0;
  std::ifstream(expected_file) >> r >> g >> b;
  auto image = decode_image_file(dir / "cmyk.jpg", 0);
  REQUIRE(image.sizes() == c10::IntArrayRef({3, 16, 16}));
  INFO("PIL RGB " << r << " " << g << " " << b);
  CHECK(std::abs(image[0][8][8].item<int>() - r) <= 3);
  CHECK(std::abs(image[1][8][8].item<int>() - g) <= 3);
  CHECK(std::abs(image[2][8][8].item<int>() - b) <= 3);
}

TEST_CASE("The paper's preparation: shorter side to size, central square", "[data][decode]") {
  TempDir dir;
  // Left third red, middle green, right third blue: the central square is all green.
  cv::Mat image(300, 900, CV_8UC3, cv::Scalar(0, 0, 255));
  image(cv::Rect(300, 0, 300, 300)).setTo(cv::Scalar(0, 255, 0));
  image(cv::Rect(600, 0, 300, 300)).setTo(cv::Scalar(255, 0, 0));
  REQUIRE(write_image(dir / "wide.png", image));
  auto out = decode_image_file(dir / "wide.png", 64);
  REQUIRE(out.sizes() == c10::IntArrayRef({3, 64, 64}));
  CHECK(out[1].min().item<int>() == 255);
  CHECK(out[0].max().item<int>() == 0);
  // Enlarging works too.
  CHECK(decode_image_file(dir / "wide.png", 400).sizes() == c10::IntArrayRef({3, 400, 400}));
}

TEST_CASE("Reduced-scale JPEG decoding stays close to a full decode", "[data][decode]") {
  TempDir dir;
  cv::Mat image(1100, 1300, CV_8UC3);
  cv::Mat noise(11, 13, CV_8UC3);
  cv::randu(noise, 0, 255);
  cv::resize(noise, image, image.size(), 0, 0, cv::INTER_CUBIC);  // smooth, photo-like
  REQUIRE(write_image(dir / "big.jpg", image, {cv::IMWRITE_JPEG_QUALITY, 95}));
  const auto bytes = read_bytes(dir / "big.jpg");
  CHECK(jpeg_dimensions(bytes.data(), bytes.size()) == std::pair<int64_t, int64_t>{1100, 1300});
  auto reduced = decode_image_file(dir / "big.jpg", 128);  // decoded at 1/8
  REQUIRE(reduced.sizes() == c10::IntArrayRef({3, 128, 128}));
  // Reference: full decode, central square, area resize.
  auto full = decode_image_file(dir / "big.jpg", 0).to(torch::kFloat).unsqueeze(0);
  auto square = full.narrow(2, 0, 1100).narrow(3, 100, 1100);
  auto reference =
      torch::nn::functional::interpolate(square, torch::nn::functional::InterpolateFuncOptions()
                                                     .size(std::vector<int64_t>{128, 128})
                                                     .mode(torch::kArea));
  const double error = (reduced.to(torch::kFloat) - reference[0]).abs().mean().item<double>();
  INFO("mean absolute difference " << error);
  CHECK(error < 3.0);
}

TEST_CASE("Bad image files raise DecodeError naming the file", "[data][decode]") {
  TempDir dir;
  cv::Mat image(64, 64, CV_8UC3, cv::Scalar(1, 2, 3));
  cv::randu(image, 0, 255);
  REQUIRE(write_image(dir / "good.jpg", image));
  REQUIRE(write_image(dir / "good.png", image));
  auto jpeg = read_bytes(dir / "good.jpg");
  auto png = read_bytes(dir / "good.png");
  write_bytes(dir / "truncated.jpg",
              std::vector<uint8_t>(jpeg.begin(), jpeg.begin() + jpeg.size() / 2));
  write_bytes(dir / "truncated.png",
              std::vector<uint8_t>(png.begin(), png.begin() + png.size() / 2));
  auto corrupt = jpeg;
  for (size_t i = 2; i < 400 && i < corrupt.size(); ++i) corrupt[i] = 0x5A;  // header destroyed
  write_bytes(dir / "corrupt.jpg", corrupt);
  write_bytes(dir / "empty.jpg", {});
  write_text(dir / "text.png", "this is not an image\n");
  fs::create_symlink(dir / "missing-target.jpg", dir / "dangling.jpg");
  for (const char* name :
       {"truncated.jpg", "truncated.png", "corrupt.jpg", "empty.jpg", "text.png", "dangling.jpg"}) {
    INFO(name);
    CHECK_THROWS_MATCHES(decode_image_file(dir / name, 32), DecodeError,
                         Catch::Matchers::Predicate<DecodeError>([&](const DecodeError& e) {
                           return std::string(e.what()).find(dir / name) != std::string::npos;
                         }));
  }
  CHECK_THROWS_WITH(decode_image_file(dir / "empty.jpg", 0), Catch::Contains("empty"));
  CHECK_THROWS_WITH(decode_image_file(dir / "truncated.jpg", 0), Catch::Contains("truncated"));
  CHECK(decode_image_file(dir / "good.jpg", 32).sizes() == c10::IntArrayRef({3, 32, 32}));
  if (getuid() != 0) {  // root reads anything
    REQUIRE(write_image(dir / "locked.png", image));
    fs::permissions(dir / "locked.png", fs::perms::none);
    CHECK_THROWS_WITH(decode_image_file(dir / "locked.png", 0),
                      Catch::Contains("cannot read") && Catch::Contains("locked.png"));
  }
}

TEST_CASE("The loader skips, counts and logs bad files; nothing gets a wrong label",
          "[data][decode]") {
  TempDir dir;
  const std::string root = dir / "root";
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 4; ++i) {
      // Each class has its own colour, so a label can be checked against the pixels.
      cv::Mat image(40, 50, CV_8UC3, cv::Scalar(0, 0, 0));
      image.setTo(cv::Scalar(c == 2 ? 200 : 0, c == 1 ? 200 : 0, c == 0 ? 200 : 0));
      REQUIRE(write_image(root + "/class" + std::to_string(c) + "/" + std::to_string(i) + ".png",
                          image));
    }
  }
  write_bytes(root + "/class1/zero.jpg", {});
  write_text(root + "/class2/text.jpeg", "not an image");
  DatasetOptions options;
  options.image_size = 32;
  auto dataset = open_dataset(root, options);
  REQUIRE(dataset->size() == 14);
  LoaderOptions loader_options;
  loader_options.batch_size = 5;
  loader_options.workers = 2;
  loader_options.skipped_log = dir / "skipped.txt";
  Loader loader(dataset, nullptr, loader_options);
  int64_t seen = 0;
  for (int epoch = 0; epoch < 2; ++epoch) {
    loader.start_epoch(epoch);
    while (auto batch = loader.next()) {
      for (size_t k = 0; k < batch->indices.size(); ++k) {
        const int64_t label = batch->labels[static_cast<int64_t>(k)].item<int64_t>();
        CHECK(label == dataset->label(static_cast<size_t>(batch->indices[k])));
        CHECK(batch->images[static_cast<int64_t>(k)][label].min().item<int>() == 200);
        ++seen;
      }
    }
  }
  CHECK(seen == 2 * 12);
  CHECK(loader.skipped() == 4);  // two files, two epochs
  const auto log = read_bytes(dir / "skipped.txt");
  const std::string text(log.begin(), log.end());
  CHECK(text.find("class1/zero.jpg") != std::string::npos);
  CHECK(text.find("class2/text.jpeg") != std::string::npos);

  loader_options.strict = true;
  loader_options.skipped_log.clear();
  Loader strict(dataset, nullptr, loader_options);
  strict.start_epoch(0);
  CHECK_THROWS_AS(
      [&] {
        while (strict.next()) {
        }
      }(),
      DecodeError);
}

TEST_CASE("compute_stats of an image folder", "[data][decode]") {
  TempDir dir;
  REQUIRE(write_image(dir / "a/black.png", cv::Mat(8, 8, CV_8UC3, cv::Scalar(0, 0, 0))));
  REQUIRE(write_image(dir / "a/white.png", cv::Mat(8, 8, CV_8UC3, cv::Scalar(255, 255, 255))));
  auto stats = compute_stats(*open_dataset(dir.path.string(), "train"), 0, 1);
  CHECK(stats.images == 2);
  for (int c = 0; c < 3; ++c) {
    CHECK(stats.mean[c] == Approx(127.5));
    CHECK(stats.std[c] == Approx(127.5));
  }
  // Covariance of [0, 1] pixels: 0.25 everywhere; top eigenvalue 0.75, times 255.
  CHECK(stats.eigenvalues[0].item<double>() == Approx(0.75 * 255));
  CHECK(stats.eigenvalues[1].item<double>() == Approx(0).margin(1e-6));
  for (int c = 0; c < 3; ++c) {
    CHECK(stats.eigenvectors[c][0].item<double>() == Approx(1 / std::sqrt(3.0)));
  }
  // When no image decodes, the error names one of them.
  write_text(dir / "bad/a/empty.png", "");
  write_text(dir / "bad/b/text.png", "not an image");
  CHECK_THROWS_WITH(compute_stats(*open_dataset(dir / "bad", "train"), 0, 1),
                    Catch::Contains("none of the 2 images") && Catch::Contains(dir / "bad/"));
}

#endif  // ALEXNET_WITH_OPENCV

// ---------------------------------------------------------------------------------------------
// IDX files

// Without zlib the "compressed" files of the next test are written raw.
constexpr bool kGzip = ALEXNET_WITH_ZLIB != 0;

TEST_CASE("IDX files, raw and gzip-compressed, grey replicated to three channels", "[data][idx]") {
  TempDir dir;
  write_idx(dir / "raw", "train", 7, 4, 3, false);
  write_idx(dir / "gz", "t10k", 5, 4, 3, kGzip);
  auto raw = open_dataset(dir / "raw", "train");
  REQUIRE(raw->size() == 7);
  CHECK(raw->class_names().front() == "0");
  auto sample = raw->get(6);
  REQUIRE(sample.image.sizes() == c10::IntArrayRef({3, 4, 3}));
  CHECK(sample.label == 6);
  CHECK(sample.image[0][1][2].item<int>() == 60 + 5);
  CHECK(torch::equal(sample.image[0], sample.image[2]));
  CHECK(raw->sample_source(6).find("train-images-idx3-ubyte#6") != std::string::npos);
  auto gz = open_dataset(dir / "gz", "test");
  REQUIRE(gz->size() == 5);
  CHECK(gz->get(3).image[1][0][0].item<int>() == 30);
  DatasetOptions grey;
  grey.channels = 1;
  CHECK(open_dataset(dir / "raw", grey)->get(0).image.size(0) == 1);
  // A folder named like Fashion-MNIST gets its class names.
  write_idx(dir / "my-fashion", "train", 3, 2, 2, kGzip);
  CHECK(open_dataset(dir / "my-fashion", "train")->class_names() == fashion_mnist_class_names());
  CHECK_THROWS_WITH(open_dataset(dir / "raw", "val"), Catch::Contains("t10k-images-idx3-ubyte"));
}

TEST_CASE("IDX files with a wrong magic number or size are refused naming the file",
          "[data][idx]") {
  TempDir dir;
  write_idx(dir.path.string(), "train", 4, 2, 2, false);
  const std::string images = dir / "train-images-idx3-ubyte";
  const std::string labels = dir / "train-labels-idx1-ubyte";
  const auto names = fashion_mnist_class_names();
  auto good = read_bytes(images);

  auto bad_magic = good;
  bad_magic[3] = 0x01;
  write_bytes(dir / "magic/train-images-idx3-ubyte", bad_magic);
  CHECK_THROWS_WITH(IdxDataset(dir / "magic/train-images-idx3-ubyte", labels, names),
                    Catch::Contains("magic/train-images-idx3-ubyte") &&
                        Catch::Contains("0x00000801") && Catch::Contains("0x00000803"));
  CHECK_THROWS_WITH(IdxDataset(labels, images, names), Catch::Contains("train-labels-idx1-ubyte"));

  write_bytes(dir / "short/train-images-idx3-ubyte",
              std::vector<uint8_t>(good.begin(), good.end() - 3));
  CHECK_THROWS_WITH(
      IdxDataset(dir / "short/train-images-idx3-ubyte", labels, names),
      Catch::Contains("short/train-images-idx3-ubyte") && Catch::Contains("header declares"));
  write_bytes(dir / "tiny/x", {0, 0});
  CHECK_THROWS_WITH(IdxDataset(dir / "tiny/x", labels, names), Catch::Contains("too short"));

  write_idx(dir / "three", "train", 3, 2, 2, false);
  CHECK_THROWS_WITH(IdxDataset(images, dir / "three/train-labels-idx1-ubyte", names),
                    Catch::Contains("4 images") && Catch::Contains("3 labels"));
  CHECK_THROWS_WITH(IdxDataset(images, labels, {"only", "two"}), Catch::Contains("label 2"));
  CHECK_THROWS_WITH(IdxDataset(dir / "absent", labels, names), Catch::Contains("absent"));

  // Images of zero rows or columns (the header is consistent: zero bytes of pixels).
  for (const auto& [rows, columns] : {std::pair{0, 0}, std::pair{0, 5}, std::pair{5, 0}}) {
    write_idx(dir / "empty", "train", 4, rows, columns, false);
    CHECK_THROWS_WITH(
        IdxDataset(dir / "empty/train-images-idx3-ubyte", labels, names),
        Catch::Contains("empty/train-images-idx3-ubyte") && Catch::Contains("at least 1"));
  }
}

TEST_CASE("Debian's Fashion-MNIST", "[data][idx]") {
  if (!fs::exists(std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz")) {
    WARN("skipped: dataset-fashion-mnist is not installed");
    return;
  }
  if (!kGzip) {
    WARN("skipped: this build has no zlib to read Debian's gzip-compressed files");
    return;
  }
  auto test = open_dataset("fashion-mnist", "test");
  CHECK(test->size() == 10000);
  CHECK(test->class_names().at(9) == "Ankle boot");
  CHECK(test->label(0) == 9);  // the first test image is an ankle boot
  CHECK(test->get(0).image.sizes() == c10::IntArrayRef({3, 28, 28}));
}

// ---------------------------------------------------------------------------------------------
// Packed files, subsets, statistics

TEST_CASE("Packed files round-trip images, labels, names and statistics", "[data][packed]") {
  TempDir dir;
  const std::string path = dir / "set.pack";
  torch::manual_seed(0);
  std::vector<torch::Tensor> images;
  {
    PackedWriter writer(path, 3, 6, 5);
    for (int i = 0; i < 7; ++i) {
      images.push_back(torch::randint(0, 256, {3, 6, 5}, torch::kByte));
      writer.add(images.back(), i % 3);
    }
    CHECK_THROWS_WITH(writer.add(torch::zeros({3, 5, 5}, torch::kByte), 0),
                      Catch::Contains("[3, 6, 5]"));
    CHECK_FALSE(fs::exists(path));  // only .partial until finish()
    StatsAccumulator accumulator;
    for (const auto& image : images) accumulator.add(image);
    writer.finish({"x", "y", "z"}, accumulator.finish(), {{"split", "train"}});
  }
  CHECK_FALSE(fs::exists(path + ".partial"));
  REQUIRE(is_packed_file(path));
  auto dataset = open_dataset(path, "train");
  REQUIRE(dataset->size() == 7);
  for (size_t i = 0; i < 7; ++i) {
    auto sample = dataset->get(i);
    CHECK(torch::equal(sample.image, images[i]));
    CHECK(sample.label == static_cast<int64_t>(i % 3));
  }
  CHECK(dataset->class_names() == std::vector<std::string>{"x", "y", "z"});
  CHECK(dataset->sample_source(4) == path + "#4");
  auto stats = dataset->stats();
  REQUIRE(stats.has_value());
  auto all = torch::stack(images).to(torch::kDouble);
  CHECK(stats->mean[1] == Approx(all.select(1, 1).mean().item<double>()));
  CHECK(stats->eigenvectors.sizes() == c10::IntArrayRef({3, 3}));
  CHECK(stats->images == 7);
  CHECK_THROWS_WITH(open_dataset(path, "val"), Catch::Contains("train split"));

  // Truncation and a foreign file are refused naming the file.
  auto bytes = read_bytes(path);
  write_bytes(dir / "cut.pack", std::vector<uint8_t>(bytes.begin(), bytes.end() - 10));
  CHECK_THROWS_WITH(PackedDataset(dir / "cut.pack"), Catch::Contains("cut.pack"));
  write_bytes(dir / "cut2.pack", std::vector<uint8_t>(bytes.begin(), bytes.begin() + 4200));
  CHECK_THROWS_WITH(PackedDataset(dir / "cut2.pack"), Catch::Contains("truncated"));
  write_text(dir / "other.pack", "hello");
  CHECK_FALSE(is_packed_file(dir / "other.pack"));
  CHECK_THROWS_WITH(PackedDataset(dir / "other.pack"), Catch::Contains("other.pack"));
}

TEST_CASE("subset keeps the first n samples or the given indices", "[data]") {
  TempDir dir;
  write_idx(dir.path.string(), "train", 9, 2, 2, false);
  auto full = open_dataset(dir.path.string(), "train");
  auto first = subset(full, 4);
  CHECK(first->size() == 4);
  CHECK(subset(full, 100)->size() == 9);
  CHECK(torch::equal(first->get(3).image, full->get(3).image));
  auto picked = subset(full, std::vector<size_t>{8, 2});
  CHECK(picked->label(0) == 8);
  CHECK(picked->sample_source(1) == full->sample_source(2));
  CHECK_THROWS(subset(full, std::vector<size_t>{9}));
}

TEST_CASE("`alexnet prepare` writes a packed file and skips bad images", "[data][packed][app]") {
#if ALEXNET_WITH_OPENCV
  if (skip_without_alexnet()) return;
  TempDir dir;
  for (int c = 0; c < 2; ++c) {
    for (int i = 0; i < 3; ++i) {
      cv::Mat image(30 + 10 * i, 40, CV_8UC3, cv::Scalar(c * 100, 50, 20 * i));
      REQUIRE(write_image(dir / ("root/c" + std::to_string(c) + "/" + std::to_string(i) + ".png"),
                          image));
    }
  }
  write_bytes(dir / "root/c1/broken.jpg", {0xFF, 0xD8, 0xFF, 0x00});
  const std::string command = std::string(ALEXNET_BINARY) + " prepare --data " + dir / "root" +
                              " --out " + dir / "out.pack" + " --size 16 --workers 2 > " +
                              dir / "log.txt" + " 2>&1";
  REQUIRE(std::system(command.c_str()) == 0);
  auto packed = open_dataset(dir / "out.pack", "train");
  DatasetOptions options;
  options.image_size = 16;
  auto folder = open_dataset(dir / "root", options);
  REQUIRE(packed->size() == 6);
  for (size_t i = 0; i < 6; ++i) {
    // broken.jpg sorts after the PNGs of c1, so the indices stay those of the folder.
    CHECK(packed->label(i) == folder->label(i));
    CHECK(torch::equal(packed->get(i).image, folder->get(i).image));
  }
  const auto skipped = read_bytes(dir / "out.pack.skipped.txt");
  CHECK(std::string(skipped.begin(), skipped.end()).find("broken.jpg") != std::string::npos);
#else
  WARN("skipped: built without OpenCV");
#endif
}

// ---------------------------------------------------------------------------------------------
// Input files: every size is checked before it is allocated, nothing lost, nothing hangs

TEST_CASE("Image folders read only regular files; a FIFO is skipped, never opened", "[data]") {
  TempDir dir;
  write_text(dir / "root/cat/a.png", "x");
  REQUIRE(mkfifo((dir / "root/cat/pipe.jpg").c_str(), 0644) == 0);
  fs::create_symlink(dir / "root/cat/pipe.jpg", dir / "root/cat/link-to-pipe.png");
  write_text(dir / "root/dog/b.png", "x");
  REQUIRE(mkfifo((dir / "root/dog/only-a-pipe.png").c_str(), 0644) == 0);
  ImageFolder folder(dir / "root");
  REQUIRE(folder.size() == 2);
  CHECK(folder.paths()[0] == dir / "root/cat/a.png");
  CHECK(folder.paths()[1] == dir / "root/dog/b.png");
  // Read directly (a list file may name one), it is refused at once instead of blocking.
  CHECK_THROWS_MATCHES(decode_image_file(dir / "root/cat/pipe.jpg", 0), DecodeError,
                       Catch::Matchers::Predicate<DecodeError>([&](const DecodeError& e) {
                         const std::string text = e.what();
                         return text.find(dir / "root/cat/pipe.jpg") != std::string::npos &&
                                text.find("not a regular file") != std::string::npos;
                       }));
}

TEST_CASE("A class names file that misses a class folder is refused naming the folder", "[data]") {
  TempDir dir;
  for (const char* file : {"ant/1.png", "bee/2.png", "cat/3.png"}) write_text(dir / file, "x");
  ImageFolder folder(dir.path.string());
  // As many lines as classes, but "cat" is not named: matching by position would call the
  // cats "Canis".
  write_text(dir / "names.txt", "ant Formicidae\nbee Apis\ndog Canis\n");
  CHECK_THROWS_WITH(folder.load_class_names(dir / "names.txt"),
                    Catch::Contains("names.txt") && Catch::Contains("cat"));
  CHECK(folder.class_names() == std::vector<std::string>{"ant", "bee", "cat"});
  // A file naming no folder at all is a list in label order.
  write_text(dir / "plain.txt", "Formicidae ants\nApis bees\nFelis cats\n");
  folder.load_class_names(dir / "plain.txt");
  CHECK(folder.class_names() ==
        std::vector<std::string>{"Formicidae ants", "Apis bees", "Felis cats"});
  write_text(dir / "short.txt", "Formicidae\nApis\n");
  CHECK_THROWS_WITH(folder.load_class_names(dir / "short.txt"),
                    Catch::Contains("short.txt") && Catch::Contains("2 lines"));
}

#if ALEXNET_WITH_OPENCV

TEST_CASE("Images larger than the pixel limit are refused from their header", "[data][decode]") {
  TempDir dir;
  cv::Mat image(30, 40, CV_8UC3);
  cv::randu(image, 0, 255);
  cv::Mat grey(30, 40, CV_8UC1, cv::Scalar(90));
  std::vector<std::string> names;
  for (const char* ext : {"png", "jpg", "bmp", "ppm", "tif", "webp"}) {
    const std::string name = std::string("image.") + ext;
    if (write_image(dir / name, image)) names.push_back(name);
  }
  if (write_image(dir / "grey.pgm", grey)) names.push_back("grey.pgm");
  REQUIRE(names.size() >= 3);
  for (const auto& name : names) {
    INFO(name);
    const auto bytes = read_bytes(dir / name);
    const ImageHeader header = read_image_header(bytes.data(), bytes.size());
    CHECK_FALSE(header.format.empty());
    CHECK(header.width == 40);
    CHECK(header.height == 30);
    CHECK_THROWS_WITH(
        decode_image_file(dir / name, 0, /*max_pixels=*/1199),
        Catch::Contains(dir / name) && Catch::Contains("1200 pixels") && Catch::Contains("1199"));
    CHECK(decode_image_file(dir / name, 0, /*max_pixels=*/1200).sizes() ==
          c10::IntArrayRef({3, 30, 40}));
  }

  // A small file whose header declares 12000 x 12000 pixels (144 megapixels) is refused
  // before anything is decoded, with the default limit of 100 megapixels.
  auto set_be32 = [](std::vector<uint8_t>& bytes, size_t at, uint32_t value) {
    for (int k = 0; k < 4; ++k) bytes[at + k] = static_cast<uint8_t>(value >> (24 - 8 * k));
  };
  REQUIRE(write_image(dir / "small.png", image));
  auto png = read_bytes(dir / "small.png");
  set_be32(png, 16, 12000);
  set_be32(png, 20, 12000);
  set_be32(png, 29, static_cast<uint32_t>(crc32(0, png.data() + 12, 17)));  // IHDR's CRC
  write_bytes(dir / "huge.png", png);
  CHECK_THROWS_WITH(decode_image_file(dir / "huge.png", 0),
                    Catch::Contains(dir / "huge.png") && Catch::Contains("144000000 pixels"));
  auto jpeg = read_bytes(dir / "image.jpg");
  size_t sof = 2;
  while (!(jpeg[sof] == 0xFF && jpeg[sof + 1] == 0xC0))
    sof += 2 + (jpeg[sof + 2] << 8) + jpeg[sof + 3];
  for (size_t at : {sof + 5, sof + 7}) {
    jpeg[at] = 12000 >> 8;
    jpeg[at + 1] = 12000 & 0xFF;
  }
  write_bytes(dir / "huge.jpg", jpeg);
  CHECK_THROWS_WITH(decode_image_file(dir / "huge.jpg", 256),
                    Catch::Contains(dir / "huge.jpg") && Catch::Contains("144000000 pixels"));

  // The limit is a data set option; the loader skips such images like any undecodable one.
  write_text(dir / "root/a/readme.txt", "x");
  REQUIRE(write_image(dir / "root/a/image.png", image));
  DatasetOptions options;
  options.max_image_pixels = 1000;
  CHECK_THROWS_AS(open_dataset(dir / "root", options)->get(0), DecodeError);
  options.max_image_pixels = 1200;
  CHECK(open_dataset(dir / "root", options)->get(0).image.size(0) == 3);
}

// The offset of the first entropy-coded byte after the JPEG's start-of-scan segment.
size_t jpeg_scan_start(const std::vector<uint8_t>& jpeg) {
  size_t pos = 2;
  while (pos + 4 <= jpeg.size() && jpeg[pos] == 0xFF) {
    const size_t length = (size_t{jpeg[pos + 2]} << 8) | jpeg[pos + 3];
    if (jpeg[pos + 1] == 0xDA) return pos + 2 + length;
    pos += 2 + length;
  }
  return 0;
}

TEST_CASE("Corrupt JPEG data is refused as the decoder reports it; trailing bytes are fine",
          "[data][decode]") {
  TempDir dir;
  cv::Mat noise(12, 12, CV_8UC3), image;
  cv::randu(noise, 0, 255);
  cv::resize(noise, image, cv::Size(96, 96), 0, 0, cv::INTER_CUBIC);
  REQUIRE(write_image(dir / "good.jpg", image, {cv::IMWRITE_JPEG_QUALITY, 90}));
  const auto good = read_bytes(dir / "good.jpg");
  const auto decoded = decode_image_file(dir / "good.jpg", 0);

  // The middle third of the entropy-coded data replaced by seeded noise (no 0xFF, so no
  // marker appears); the file still ends with the end-of-image marker.
  const size_t start = jpeg_scan_start(good);
  REQUIRE(start > 0);
  const size_t end = good.size() - 2;
  REQUIRE((good[end] == 0xFF && good[end + 1] == 0xD9));
  auto damaged = good;
  std::mt19937 rng(3);
  for (size_t i = start + (end - start) / 3; i < start + 2 * (end - start) / 3; ++i) {
    damaged[i] = static_cast<uint8_t>(rng() % 255);
  }
  write_bytes(dir / "damaged.jpg", damaged);
  CHECK_THROWS_MATCHES(decode_image_file(dir / "damaged.jpg", 0), DecodeError,
                       Catch::Matchers::Predicate<DecodeError>([&](const DecodeError& e) {
                         INFO(e.what());
                         return std::string(e.what()).find(dir / "damaged.jpg") !=
                                std::string::npos;
                       }));
  // Cut before its end: the decoder's "Premature end of JPEG file".
  write_bytes(dir / "cut.jpg", std::vector<uint8_t>(good.begin(), good.end() - 200));
  CHECK_THROWS_WITH(decode_image_file(dir / "cut.jpg", 0),
                    Catch::Contains("cut.jpg") && Catch::Contains("truncated"));

  // 5000 bytes after the end-of-image marker (a thumbnail, a camera's trailer) change nothing.
  auto trailing = good;
  trailing.insert(trailing.end(), 5000, 0x20);
  write_bytes(dir / "trailing.jpg", trailing);
  CHECK(torch::equal(decode_image_file(dir / "trailing.jpg", 0), decoded));
}

#endif  // ALEXNET_WITH_OPENCV

TEST_CASE("An IDX header declaring 2^64 pixels is refused naming the file and the fields",
          "[data][idx]") {
  TempDir dir;
  write_idx(dir.path.string(), "train", 4, 2, 2, false);
  // 2^22 images of 2^21 x 2^21: the product wraps to 0 in 64 bits, the file is 16 bytes.
  write_bytes(dir / "wrap/train-images-idx3-ubyte",
              big_endian({0x803, 1u << 22, 1u << 21, 1u << 21}));
  CHECK_THROWS_WITH(
      IdxDataset(dir / "wrap/train-images-idx3-ubyte", dir / "train-labels-idx1-ubyte",
                 fashion_mnist_class_names()),
      Catch::Contains("wrap/train-images-idx3-ubyte") && Catch::Contains("count x rows x columns"));
  write_bytes(dir / "labels-wrap", big_endian({0x801, 0xFFFFFFFFu}));
  CHECK_THROWS_WITH(
      IdxDataset(dir / "train-images-idx3-ubyte", dir / "labels-wrap", fashion_mnist_class_names()),
      Catch::Contains("labels-wrap") && Catch::Contains("count"));
}

#if ALEXNET_WITH_ZLIB
namespace {

// Writes `prefix` then `zeros` zero bytes as one gzip stream.
void write_gzip(const std::string& path, const std::vector<uint8_t>& prefix, size_t zeros) {
  fs::create_directories(fs::path(path).parent_path());
  gzFile file = gzopen(path.c_str(), "wb");
  gzwrite(file, prefix.data(), static_cast<unsigned>(prefix.size()));
  const std::vector<uint8_t> chunk(1 << 20, 0);
  for (size_t done = 0; done < zeros; done += chunk.size()) {
    gzwrite(file, chunk.data(), static_cast<unsigned>(std::min(chunk.size(), zeros - done)));
  }
  gzclose(file);
}

long max_resident_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

}  // namespace

TEST_CASE("Gzip IDX files are inflated only as far as their header declares", "[data][idx]") {
  TempDir dir;
  write_idx(dir.path.string(), "train", 4, 2, 2, false);
  const std::string labels = dir / "train-labels-idx1-ubyte";
  const auto names = fashion_mnist_class_names();
  std::vector<uint8_t> header = big_endian({0x803, 4, 2, 2});
  for (int i = 0; i < 16; ++i) header.push_back(static_cast<uint8_t>(i));

  // A bomb: 16 pixel bytes declared, 128 MiB of zeros behind them. Reading stops at the first
  // byte beyond the declared size.
  write_gzip(dir / "bomb.gz", header, size_t{128} << 20);
  const long before = max_resident_kib();
  CHECK_THROWS_WITH(
      IdxDataset(dir / "bomb.gz", labels, names),
      Catch::Contains("bomb.gz") && Catch::Contains("more bytes than its header declares"));
  CHECK(max_resident_kib() - before < 32 * 1024);

  // The same with the stream cut short far behind the declared bytes: the cut is never reached.
  write_gzip(dir / "long.gz", header, size_t{8} << 20);
  auto compressed = read_bytes(dir / "long.gz");
  compressed.resize(compressed.size() - 64);
  write_bytes(dir / "cut.gz", compressed);
  CHECK_THROWS_WITH(
      IdxDataset(dir / "cut.gz", labels, names),
      Catch::Contains("cut.gz") && Catch::Contains("more bytes than its header declares"));

  // A header declaring more than the compressed file can inflate to (deflate's ratio is at most
  // 1032:1) is refused before anything is allocated.
  write_gzip(dir / "claims.gz", big_endian({0x803, 1000, 1000, 1000}), 100);
  CHECK_THROWS_WITH(IdxDataset(dir / "claims.gz", labels, names),
                    Catch::Contains("claims.gz") && Catch::Contains("count x rows x columns"));

  // Fewer bytes than declared: truncated.
  write_gzip(dir / "short.gz", std::vector<uint8_t>(header.begin(), header.end() - 5), 0);
  CHECK_THROWS_WITH(IdxDataset(dir / "short.gz", labels, names),
                    Catch::Contains("short.gz") && Catch::Contains("header declares"));

  // The declared size exactly: read.
  write_gzip(dir / "exact.gz", header, 0);
  IdxDataset exact(dir / "exact.gz", labels, names, 1);
  CHECK(exact.size() == 4);
  CHECK(exact.get(3).image[0][1][1].item<int>() == 15);
}
#else
TEST_CASE("Without zlib a gzip-compressed IDX file is refused naming the file", "[data][idx]") {
  TempDir dir;
  write_idx(dir.path.string(), "train", 2, 2, 2, false);
  write_bytes(dir / "gz/train-images-idx3-ubyte.gz", {0x1f, 0x8b, 0x08, 0x00});
  write_bytes(dir / "gz/train-labels-idx1-ubyte", read_bytes(dir / "train-labels-idx1-ubyte"));
  CHECK_THROWS_WITH(open_dataset(dir / "gz", "train"),
                    Catch::Contains("train-images-idx3-ubyte.gz") &&
                        Catch::Contains("gzip-compressed") && Catch::Contains("gunzip"));
}
#endif

TEST_CASE("Malformed packed headers are refused naming the file and the field", "[data][packed]") {
  TempDir dir;
  const std::string good = dir / "good.pack";
  write_small_pack(good);
  REQUIRE(open_dataset(good, "train")->size() == 3);
  const std::vector<std::pair<std::string, nlohmann::json>> cases{
      {"channels", "3"},
      {"count", "3"},
      {"height", 2.5},
      {"width", -2},
      {"labels", {0, "1", 2}},
      {"labels", {0, 1, 7}},
      {"class_names", {1, 2, 3}},
      {"mean", "grey"},
      {"std", {1, 2}},
      {"eigenvalues", nullptr},
      {"eigenvectors", {{1, 0, 0}, {0, 1, 0}}},
      {"stats_images", "many"},
      {"split", 5},
      {"data_offset", 0},
      {"data_offset", "4096"},
      {"mean", {1e308, 0, 0}},
      {"std", {-1, 1, 1}},
      {"eigenvalues", {1e300, 1e300, 1e300}},
      {"eigenvectors", {{2, 0, 0}, {0, 1, 0}, {0, 0, 1}}},
  };
  int number = 0;
  for (const auto& [field, value] : cases) {
    const std::string path = dir / ("bad" + std::to_string(number++) + ".pack");
    fs::copy_file(good, path);
    edit_packed_header(path, [&, &field = field, &value = value](nlohmann::json& header) {
      header[field] = value;
    });
    INFO(field << " = " << value.dump());
    CHECK_THROWS_WITH(open_dataset(path, "train"),
                      Catch::Contains(path) && Catch::Contains("'" + field + "'"));
  }
  const std::string missing = dir / "missing.pack";
  fs::copy_file(good, missing);
  edit_packed_header(missing, [](nlohmann::json& header) { header.erase("labels"); });
  CHECK_THROWS_WITH(PackedDataset(missing),
                    Catch::Contains(missing) && Catch::Contains("'labels'"));
}

TEST_CASE("Packed image sizes that wrap around 64 bits, and 4 channels, are refused on open",
          "[data][packed]") {
  TempDir dir;
  const std::string wrap = dir / "wrap.pack";
  write_small_pack(wrap);
  // 3 x 2^32 x 2^32 bytes per image is 3 * 2^64: 0 in 64 bits, so every image would "fit".
  edit_packed_header(wrap, [](nlohmann::json& header) {
    header["height"] = uint64_t{1} << 32;
    header["width"] = uint64_t{1} << 32;
  });
  CHECK_THROWS_WITH(PackedDataset(wrap), Catch::Contains(wrap) && Catch::Contains("'height'"));

  // 4 x 1 x 3 bytes per image fits the 3 x 2 x 2 bytes stored, but a data set has 1 or 3
  // channels.
  const std::string rgba = dir / "rgba.pack";
  write_small_pack(rgba);
  edit_packed_header(rgba, [](nlohmann::json& header) {
    header["channels"] = 4;
    header["height"] = 1;
    header["width"] = 3;
  });
  CHECK_THROWS_WITH(open_dataset(rgba, "train"),
                    Catch::Contains(rgba) && Catch::Contains("'channels'") && Catch::Contains("4"));
}

TEST_CASE("compute_stats passes errors of its threads to the caller", "[data]") {
  // Before, a 4-channel image ended the process from a statistics thread (terminate).
  CHECK_THROWS_WITH(compute_stats(OddDataset(4, 1000), 0, 1),
                    Catch::Contains("labelled#") && Catch::Contains("[4, 2, 2]"));
  CHECK_THROWS_WITH(compute_stats(OddDataset(3, 17), 0, 1), Catch::Contains("odd#17 broke"));
  CHECK(compute_stats(OddDataset(1, 1000), 0, 1).images == 40);
}

// ---------------------------------------------------------------------------------------------
// Seeded, class-stratified selections

namespace {

// Labels sorted by class, as image folders and packed files are: counts[c] samples of class c.
std::shared_ptr<LabelledDataset> sorted_by_class(const std::vector<size_t>& counts) {
  std::vector<int64_t> labels;
  for (size_t c = 0; c < counts.size(); ++c) labels.insert(labels.end(), counts[c], c);
  return std::make_shared<LabelledDataset>(labels, counts.size());
}

std::vector<size_t> per_class(const Dataset& dataset, size_t classes) {
  std::vector<size_t> counts(classes, 0);
  for (size_t i = 0; i < dataset.size(); ++i) ++counts[static_cast<size_t>(dataset.label(i))];
  return counts;
}

std::vector<std::string> described(const Dataset& dataset) {
  std::vector<std::string> out;
  for (size_t i = 0; i < dataset.size(); ++i) out.push_back(dataset.sample_source(i));
  return out;
}

}  // namespace

TEST_CASE("stratified_split holds out every class in proportion, depending only on the seed",
          "[data][stratified]") {
  auto dataset = sorted_by_class({500, 300, 150, 50});
  const auto split = stratified_split(dataset, 100, /*seed=*/7);
  CHECK(per_class(*split.selected, 4) == std::vector<size_t>{50, 30, 15, 5});
  CHECK(per_class(*split.rest, 4) == std::vector<size_t>{450, 270, 135, 45});
  // Disjoint, and together every sample once.
  auto all = described(*split.rest);
  const auto selected = described(*split.selected);
  all.insert(all.end(), selected.begin(), selected.end());
  std::sort(all.begin(), all.end());
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
  CHECK(all.size() == 1000);
  // Drawn at random within each class, not its first or last samples: class 0 is 0..499.
  const auto indices = stratified_indices(*dataset, 100, 7);
  CHECK(indices.front() < 100);
  CHECK(indices[49] > 400);

  // The same seed gives the same selection, another seed another one.
  CHECK(described(*stratified_split(dataset, 100, 7).selected) == selected);
  CHECK(described(*stratified_split(dataset, 100, 8).selected) != selected);
  // stratified_subset selects what stratified_split holds out.
  CHECK(described(*stratified_subset(dataset, 100, 7)) == selected);
  CHECK(stratified_subset(dataset, 5000, 7)->size() == 1000);

  // Shares that do not divide evenly: each class gets the floor or the ceiling of its share.
  auto uneven = sorted_by_class({7, 2, 1, 3});
  for (size_t n : {1, 4, 5, 12}) {
    const auto counts = per_class(*stratified_subset(uneven, n, 1), 4);
    size_t total = 0;
    for (size_t c = 0; c < 4; ++c) {
      const double share = static_cast<double>(n) * std::vector<double>{7, 2, 1, 3}[c] / 13;
      INFO("n " << n << " class " << c);
      CHECK(static_cast<double>(counts[c]) >= std::floor(share));
      CHECK(static_cast<double>(counts[c]) <= std::ceil(share));
      total += counts[c];
    }
    CHECK(total == n);
  }
  CHECK_THROWS_WITH(stratified_split(dataset, 1000, 7), Catch::Contains("1000"));
  CHECK(stratified_split(dataset, 0, 7).rest->size() == 1000);
}

// ---------------------------------------------------------------------------------------------
// `alexnet prepare`: interruption, the skipped-images log, --limit

#if ALEXNET_WITH_OPENCV

namespace {

// root/c0 and root/c1, each with `per_class` small PNGs.
void write_two_classes(const std::string& root, int per_class) {
  for (int c = 0; c < 2; ++c) {
    for (int i = 0; i < per_class; ++i) {
      cv::Mat image(20 + i, 24, CV_8UC3, cv::Scalar(c * 100, 50, 20 * i));
      write_image(root + "/c" + std::to_string(c) + "/" + std::to_string(i) + ".png", image);
    }
  }
}

}  // namespace

TEST_CASE("`alexnet prepare` stopped by SIGINT or SIGTERM removes its partial file",
          "[data][packed][app]") {
  if (skip_without_alexnet()) return;
  for (int sig : {SIGINT, SIGTERM}) {
    INFO("signal " << sig);
    TempDir dir;
    write_two_classes(dir / "root", 2);
    // The validation list is a FIFO: prepare opens it (after installing its handlers) and
    // waits for its lines, so the signal arrives at a known point, and the run goes on to
    // create the partial file before it sees the request to stop.
    const std::string list = dir / "list.fifo";
    REQUIRE(mkfifo(list.c_str(), 0644) == 0);
    const std::string out = dir / "val.pack";
    const pid_t pid = start_alexnet({"prepare", "--data", dir / "root", "--split", "val",
                                     "--val-data", list, "--out", out, "--size", "8"},
                                    dir / "log.txt");
    int fd = -1;
    for (int tries = 0; tries < 3000 && fd < 0; ++tries) {
      fd = ::open(list.c_str(), O_WRONLY | O_NONBLOCK);  // fails until prepare opens it
      if (fd < 0) usleep(10000);
    }
    REQUIRE(fd >= 0);
    REQUIRE(kill(pid, sig) == 0);
    const std::string lines = "c0/0.png c0\nc1/0.png c1\nc0/1.png c0\n";
    REQUIRE(write(fd, lines.data(), lines.size()) == static_cast<ssize_t>(lines.size()));
    ::close(fd);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    INFO(read_text(dir / "log.txt"));
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 128 + sig);
    CHECK_FALSE(fs::exists(out));
    CHECK_FALSE(fs::exists(out + ".partial"));
  }
}

TEST_CASE("`alexnet prepare` writes the skipped-images log only when an image was skipped",
          "[data][packed][app]") {
  if (skip_without_alexnet()) return;
  TempDir dir;
  write_two_classes(dir / "root", 2);
  REQUIRE(mkfifo((dir / "root/c0/pipe.jpg").c_str(), 0644) == 0);  // skipped, never opened
  const std::string log = dir / "mine.txt";
  write_text(log, "kept\n");
  const std::vector<std::string> args{"prepare", "--data", dir / "root",    "--out", dir / "a.pack",
                                      "--size",  "8",      "--skipped-log", log};
  REQUIRE(run_alexnet(args, dir / "run.txt") == 0);
  CHECK(read_text(log) == "kept\n");
  CHECK(read_text(dir / "run.txt").find("pipe.jpg") != std::string::npos);  // the warning
  CHECK(open_dataset(dir / "a.pack", "train")->size() == 4);

  write_bytes(dir / "root/c1/broken.jpg", {0xFF, 0xD8, 0xFF, 0x00});
  REQUIRE(run_alexnet(args, dir / "run.txt") == 0);
  const std::string text = read_text(log);
  CHECK(text.find("broken.jpg") != std::string::npos);
  CHECK(text.find("kept") == std::string::npos);
  // Written whole, then renamed: no temporary file stays behind.
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir.path)) {
    files.push_back(entry.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  CHECK(files == std::vector<std::string>{"a.pack", "mine.txt", "root", "run.txt"});
}

TEST_CASE("`alexnet prepare --limit` keeps every class in proportion", "[data][packed][app]") {
  if (skip_without_alexnet()) return;
  TempDir dir;
  write_two_classes(dir / "root", 3);
  REQUIRE(run_alexnet({"prepare", "--data", dir / "root", "--out", dir / "a.pack", "--size", "8",
                       "--limit", "4"},
                      dir / "run.txt") == 0);
  auto packed = open_dataset(dir / "a.pack", "train");
  REQUIRE(packed->size() == 4);
  CHECK(per_class(*packed, 2) == std::vector<size_t>{2, 2});
}

#endif  // ALEXNET_WITH_OPENCV

// Matching a data set's classes to a model's

namespace {

// Sample i has label labels[i] of the classes `names`.
class NamedDataset : public LabelledDataset {
 public:
  NamedDataset(std::vector<int64_t> labels, std::vector<std::string> names)
      : LabelledDataset(std::move(labels), names.size()), names_(std::move(names)) {}
  const std::vector<std::string>& class_names() const override { return names_; }

 private:
  std::vector<std::string> names_;
};

}  // namespace

TEST_CASE("describe_class_difference names the missing and the extra classes", "[data][classes]") {
  const std::vector<std::string> model{"cat", "dog", "fox"};
  CHECK(describe_class_difference(model, model).empty());
  CHECK(describe_class_difference({"cat", "fox"}, model) ==
        "the model's classes 'dog' are missing from the data");
  CHECK(describe_class_difference({"cat", "fox", "owl", "yak"}, model) ==
        "the model's classes 'dog' are missing from the data; the data's classes 'owl', 'yak' "
        "are not among the model's");
  CHECK(describe_class_difference({"fox", "dog", "cat"}, model) ==
        "the data holds the model's classes in another order");
}

TEST_CASE("relabel_by_name maps the data's classes to the model's by name", "[data][classes]") {
  const std::vector<std::string> model{"cat", "dog", "fox"};
  auto data = std::make_shared<NamedDataset>(std::vector<int64_t>{0, 1, 1, 0},
                                             std::vector<std::string>{"fox", "cat"});
  const auto relabelled = relabel_by_name(data, model);
  REQUIRE(relabelled->size() == 4);
  CHECK(relabelled->class_names() == model);
  const std::vector<int64_t> expected{2, 0, 0, 2};
  for (size_t i = 0; i < 4; ++i) {
    CHECK(relabelled->label(i) == expected[i]);
    CHECK(relabelled->get(i).label == expected[i]);
    CHECK(relabelled->sample_source(i) == data->sample_source(i));
  }
  auto extra = std::make_shared<NamedDataset>(std::vector<int64_t>{0, 1, 2},
                                              std::vector<std::string>{"cat", "owl", "yak"});
  CHECK_THROWS_WITH(relabel_by_name(extra, model),
                    Catch::Contains("'owl', 'yak'") && Catch::Contains("not among the model's"));
}

}  // namespace test_data
