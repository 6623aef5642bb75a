#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "train/plot.h"
#include "tests/support.h"

namespace test_plot {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace alexnet::testing;

namespace {

// Three epochs of 10 steps, logged every 2 steps, as the trainer writes them; step lines
// have no validation fields and one has a null error.
void write_metrics(const fs::path& path) {
  std::ofstream out(path);
  int step = 0;
  for (int epoch = 0; epoch < 3; ++epoch) {
    for (int batch = 2; batch <= 10; batch += 2) {
      step += 2;
      const double e = epoch + batch / 10.0;
      json record{{"kind", "step"},
                  {"epoch", e},
                  {"step", step},
                  {"loss", 2.3 / (1.0 + e)},
                  {"lr", 0.01},
                  {"train_top1_error", 0.9 / (1.0 + e)},
                  {"train_top5_error", step == 4 ? json(nullptr) : json(0.5 / (1.0 + e))}};
      out << record.dump() << "\n";
    }
    json record{{"kind", "epoch"},
                {"epoch", epoch + 1},
                {"step", step},
                {"loss", 2.0 / (1.5 + epoch)},
                {"train_top1_error", 0.6},
                {"train_top5_error", 0.2},
                {"val_loss", 1.9 / (1.5 + epoch)},
                {"val_top1_error", 0.5 / (1.0 + epoch)},
                {"val_top5_error", 0.1 / (1.0 + epoch)}};
    if (epoch == 1) record["lr_dropped_to"] = 0.001;
    out << record.dump() << "\n";
  }
}

// Pixels of a BGR colour (within a tolerance for anti-aliasing) inside a rectangle.
int count_colour(const cv::Mat& image, const cv::Rect& area, cv::Vec3b colour) {
  int count = 0;
  for (int y = area.y; y < area.y + area.height; ++y) {
    for (int x = area.x; x < area.x + area.width; ++x) {
      const auto& p = image.at<cv::Vec3b>(y, x);
      if (std::abs(p[0] - colour[0]) + std::abs(p[1] - colour[1]) + std::abs(p[2] - colour[2]) <
          30) {
        ++count;
      }
    }
  }
  return count;
}

}  // namespace

TEST_CASE("plot_training_curves draws both panels into a PNG of the documented size", "[plot]") {
  const fs::path dir = fresh_dir("curves");
  write_metrics(dir / "metrics.jsonl");
  const fs::path png = dir / "out" / "curves.png";
  alexnet::train::plot_training_curves((dir / "metrics.jsonl").string(), png.string());
  const cv::Mat image = cv::imread(png.string(), cv::IMREAD_COLOR);
  REQUIRE_FALSE(image.empty());
  CHECK(image.cols == alexnet::train::kCurvesWidth);
  CHECK(image.rows == alexnet::train::kCurvesHeight);
  // Train curves (blue) and validation curves (orange) in the left and the right half.
  const cv::Rect left(0, 80, image.cols / 2, image.rows - 150);
  const cv::Rect right(image.cols / 2, 80, image.cols / 2, image.rows - 150);
  const cv::Vec3b blue(180, 119, 31), orange(14, 127, 255);
  CHECK(count_colour(image, left, blue) > 100);
  CHECK(count_colour(image, left, orange) > 50);
  CHECK(count_colour(image, right, blue) > 200);
  CHECK(count_colour(image, right, orange) > 100);
  // Text (the title, tick labels) is dark.
  CHECK(count_colour(image, cv::Rect(0, 0, image.cols, 60), cv::Vec3b(30, 30, 30)) > 100);
  fs::remove_all(dir);
}

TEST_CASE("plot_training_curves names a missing or corrupt metrics file", "[plot]") {
  const fs::path dir = fresh_dir("errors");
  const std::string missing = (dir / "missing.jsonl").string();
  CHECK_THROWS_WITH(alexnet::train::plot_training_curves(missing, (dir / "a.png").string()),
                    Catch::Contains(missing));

  const fs::path corrupt = dir / "corrupt.jsonl";
  std::ofstream(corrupt) << R"({"kind": "step", "epoch": 0.5, "loss": 2})"
                         << "\nnot json\n"
                         << R"({"kind": "epoch", "epoch": 1, "loss": 1})"
                         << "\n";
  CHECK_THROWS_WITH(
      alexnet::train::plot_training_curves(corrupt.string(), (dir / "b.png").string()),
      Catch::Contains("corrupt.jsonl") && Catch::Contains("line 2"));

  // A truncated last line (a crash while writing) is ignored.
  const fs::path truncated = dir / "truncated.jsonl";
  std::ofstream(truncated) << R"({"kind": "epoch", "epoch": 1, "loss": 1.5, "val_loss": 1.6})"
                           << "\n{\"kind\": \"ep";
  alexnet::train::plot_training_curves(truncated.string(), (dir / "c.png").string());
  CHECK(fs::exists(dir / "c.png"));
  fs::remove_all(dir);
}

}  // namespace test_plot
