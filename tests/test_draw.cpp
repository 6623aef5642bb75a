#include <filesystem>

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "draw/confusion_matrix.h"
#include "draw/drawing.h"
#include "tests/support.h"

namespace test_draw {

using namespace alexnet::draw;
using namespace alexnet::testing;

TEST_CASE("A confusion matrix is drawn as a PNG of the expected size, shaded by row share",
          "[draw][confusion]") {
  TempDir dir;
  const auto confusion = torch::tensor({{8, 2, 0}, {0, 10, 0}, {5, 0, 5}}, torch::kInt64);
  const std::vector<std::string> names{"cat", "dog", "a-very-long-class-name-indeed"};
  ConfusionMatrixOptions options;
  const auto picture = confusion_matrix_picture(confusion, names, options);
  const auto [height, width] = confusion_matrix_size(3, options);
  REQUIRE(picture.sizes() == torch::IntArrayRef({height, width, 3}));
  write_png(picture, dir / "confusion.png");
  CHECK(read_picture(dir / "confusion.png").sizes() == torch::IntArrayRef({height, width, 3}));

  // The top-left pixels inside a cell (clear of its text) show its shade: the full row of
  // "dog" dark, the empty cell (cat, two) white, the half row (two, two) in between.
  const int64_t top = 30 + options.label_size, left = options.label_size;
  auto shade = [&](int64_t row, int64_t column) {
    return picture[top + row * options.cell_size + 3][left + column * options.cell_size + 3]
        .to(torch::kInt64)
        .sum()
        .item<int64_t>();
  };
  CHECK(shade(0, 2) == 3 * 255);
  CHECK(shade(1, 1) < shade(2, 2));
  CHECK(shade(2, 2) < shade(0, 2));
  // Class names are written left of the rows.
  CHECK(
      picture.slice(0, top, top + options.cell_size).slice(1, 0, left).lt(128).any().item<bool>());

  CHECK_THROWS_WITH(confusion_matrix_picture(confusion, {"cat"}), Catch::Contains("1 class names"));
  CHECK_THROWS_WITH(confusion_matrix_picture(torch::zeros({2, 3}), {"a", "b"}),
                    Catch::Contains("[classes, classes]"));
}

TEST_CASE("line_chart draws vertical markers and series without points", "[draw][chart]") {
  ChartOptions options;
  options.width = 320;
  options.height = 240;
  options.vertical_markers = {{1.5, "lr 0.001"}};
  const auto chart = line_chart({{"empty", {}, {}}}, options);
  CHECK(chart.sizes() == torch::IntArrayRef({240, 320, 3}));
  Series dashed{"dashed", {0, 1, 2}, {1, 2, 3}};
  dashed.dashed = true;
  dashed.colour = Rgb{255, 0, 0};
  const auto drawn = line_chart({dashed}, options);
  // Red pixels come from the series only.
  const auto rgb = drawn.to(torch::kInt64);
  const auto red = rgb.select(2, 0).gt(200) & rgb.select(2, 1).lt(60) & rgb.select(2, 2).lt(60);
  CHECK(red.sum().item<int64_t>() > 20);
}

}  // namespace test_draw
