#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "experiments/binary_codes.h"
#include "experiments/feature_index.h"
#include "tests/app_support.h"
#include "tests/support.h"

namespace test_codes {

using namespace alexnet::experiments;
using namespace alexnet::testing;

// Random bits [n, bits] as bool, from the global generator.
torch::Tensor random_bits(int64_t n, int64_t bits) {
  return torch::randint(0, 2, {n, bits}, torch::kLong).to(torch::kBool);
}

// The k nearest rows by a plain loop over unpacked bits: distance, then the query's own row,
// then row index; the own row left out when `exclude`.
std::vector<Neighbour> brute_force_nearest(const torch::Tensor& bits, const torch::Tensor& query,
                                           int64_t k, int64_t self, bool exclude) {
  std::vector<Neighbour> all;
  for (int64_t i = 0; i < bits.size(0); ++i) {
    if (exclude && i == self) continue;
    int64_t d = 0;
    for (int64_t j = 0; j < bits.size(1); ++j) {
      d += bits[i][j].item<bool>() != query[j].item<bool>();
    }
    all.push_back({i, static_cast<double>(d)});
  }
  std::sort(all.begin(), all.end(), [self](const Neighbour& a, const Neighbour& b) {
    if (a.distance != b.distance) return a.distance < b.distance;
    if ((a.index == self) != (b.index == self)) return a.index == self;
    return a.index < b.index;
  });
  all.resize(std::min<size_t>(all.size(), static_cast<size_t>(k)));
  return all;
}

// Well-separated clusters: `classes` centres in `dim` dimensions, `per_class` noisy points each,
// label = cluster.
std::pair<torch::Tensor, torch::Tensor> clustered_vectors(int64_t classes, int64_t per_class,
                                                          int64_t dim) {
  const auto centres = 3.0 * torch::randn({classes, dim});
  const auto labels = torch::arange(classes, torch::kLong).repeat_interleave(per_class);
  const auto vectors =
      centres.index_select(0, labels) + 0.3 * torch::randn({classes * per_class, dim});
  return {vectors, labels};
}

// A feature index of clustered vectors (fc7 and pixels) with made-up image records.
FeatureIndex clustered_index(int64_t classes, int64_t per_class, int64_t dim) {
  auto [vectors, labels] = clustered_vectors(classes, per_class, dim);
  FeatureIndex index;
  index.features = vectors.relu();
  index.pixels = vectors.slice(1, 0, dim / 2).contiguous();
  index.labels = labels;
  for (int64_t c = 0; c < classes; ++c) index.class_names.push_back("class" + std::to_string(c));
  for (int64_t i = 0; i < labels.size(0); ++i) {
    index.descriptions.push_back("synthetic#" + std::to_string(i));
    index.dataset_indices.push_back(i);
  }
  index.data_source = "synthetic";
  index.split = "test";
  index.model_path = "none.pt";
  return index;
}

TEST_CASE("Bits are packed into uint64 words and unpacked unchanged", "[codes]") {
  torch::manual_seed(0);
  for (int64_t bits : {1, 7, 63, 64, 65, 130, 256}) {
    const auto b = random_bits(9, bits);
    const auto packed = pack_bits(b);
    CHECK(packed.sizes() == torch::IntArrayRef({9, (bits + 63) / 64}));
    CHECK(packed.scalar_type() == torch::kLong);
    CHECK(torch::equal(unpack_bits(packed, bits), b));
  }
  // Bit j is bit j % 64 of word j / 64.
  auto one = torch::zeros({1, 130}, torch::kBool);
  one[0][0] = true;
  one[0][65] = true;
  one[0][129] = true;
  const auto packed = pack_bits(one);
  CHECK(packed[0][0].item<int64_t>() == 1);
  CHECK(packed[0][1].item<int64_t>() == 2);
  CHECK(packed[0][2].item<int64_t>() == 2);
  // The top bit of a word is the sign bit of the int64 that stores it.
  auto top = torch::zeros({1, 64}, torch::kBool);
  top[0][63] = true;
  CHECK(pack_bits(top)[0][0].item<int64_t>() == std::numeric_limits<int64_t>::min());

  CHECK_THROWS_WITH(pack_bits(torch::ones({5}, torch::kBool)), Catch::Contains("[N, B]"));
  CHECK_THROWS_WITH(unpack_bits(pack_bits(random_bits(2, 64)), 65), Catch::Contains("65 bits"));
}

TEST_CASE("Hamming distances and search agree with a loop over the bits", "[codes]") {
  torch::manual_seed(1);
  // 8 bits give many ties (the order among equals is tested); 130 bits span three words.
  for (int64_t bits : {8, 64, 130}) {
    const int64_t n = 60;
    const auto b = random_bits(n, bits);
    const auto codes = pack_bits(b);
    const auto distances = hamming_distances(codes, codes);
    CHECK(torch::equal(distances, b.unsqueeze(1).ne(b.unsqueeze(0)).sum(2).to(torch::kLong)));
    CHECK(distances.diagonal().eq(0).all().item<bool>());

    const std::vector<int64_t> self{3, 17, 59};
    const auto queries = codes.index_select(0, torch::tensor(self, torch::kLong));
    for (bool exclude : {false, true}) {
      for (int64_t k : {1, 5, 20, 100}) {
        const auto found = hamming_neighbours(codes, queries, k, self, exclude);
        REQUIRE(found.size() == 3);
        for (size_t q = 0; q < 3; ++q) {
          const auto expected = brute_force_nearest(b, b[self[q]], k, self[q], exclude);
          REQUIRE(found[q].size() == expected.size());
          for (size_t i = 0; i < expected.size(); ++i) {
            CHECK(found[q][i].index == expected[i].index);
            CHECK(found[q][i].distance == expected[i].distance);
          }
        }
      }
    }
    // A query that is not in the set: ties by row index alone.
    const auto outside = random_bits(1, bits);
    const auto found = hamming_neighbours(codes, pack_bits(outside), 7);
    const auto expected = brute_force_nearest(b, outside[0], 7, -1, false);
    for (size_t i = 0; i < expected.size(); ++i) CHECK(found[0][i].index == expected[i].index);
  }
}

TEST_CASE("Hamming precision@k equals the share counted over the brute-force neighbours",
          "[codes]") {
  torch::manual_seed(2);
  const int64_t n = 80, k = 4;
  const auto b = random_bits(n, 16);
  const auto labels = torch::randint(0, 3, {n}, torch::kLong);
  int64_t hits = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (const auto& nb : brute_force_nearest(b, b[i], k, i, /*exclude=*/true)) {
      hits += labels[nb.index].item<int64_t>() == labels[i].item<int64_t>();
    }
  }
  CHECK(hamming_precision_at_k(pack_bits(b), labels, k) ==
        Approx(static_cast<double>(hits) / (n * k)));

  CHECK_THROWS_WITH(hamming_precision_at_k(pack_bits(b), labels, n), Catch::Contains("k must"));
  CHECK_THROWS_WITH(hamming_precision_at_k(pack_bits(b), labels.slice(0, 0, 5), 2),
                    Catch::Contains("labels"));
  CHECK_THROWS_WITH(hamming_neighbours(pack_bits(b), pack_bits(random_bits(2, 70)), 2),
                    Catch::Contains("words"));
  CHECK_THROWS_WITH(hamming_neighbours(pack_bits(b), pack_bits(b), 0), Catch::Contains("k must"));
  CHECK_THROWS_WITH(hamming_distances(b.to(torch::kFloat), pack_bits(b)), Catch::Contains("int64"));
}

TEST_CASE("The binary autoencoder lowers its reconstruction loss and codes keep the clusters",
          "[codes]") {
  torch::manual_seed(3);
  auto [vectors, labels] = clustered_vectors(/*classes=*/6, /*per_class=*/60, /*dim=*/24);
  torch::manual_seed(30);
  BinaryAutoencoder model(BinaryAutoencoderOptions(24, 16).hidden(64));
  model->set_standardisation(vectors);
  model->eval();
  const double before = model->reconstruction_loss(vectors);
  CodeTrainingOptions options;
  options.epochs = 40;
  options.batch_size = 32;
  options.lr = 3e-3;
  int64_t reported = 0;
  const auto losses = train_binary_autoencoder(model, vectors, options,
                                               [&](int64_t epoch, double) { reported = epoch; });
  CHECK(reported == 40);
  REQUIRE(losses.size() == 40);
  CHECK(losses.back() < 0.5 * losses.front());
  const double after = model->reconstruction_loss(vectors);
  CHECK(after < 0.5 * before);
  CHECK_FALSE(model->is_training());

  // Eval-mode codes are 0/1 and deterministic; the clusters survive in Hamming space.
  const auto code = model->code(vectors);
  CHECK((code.eq(0) | code.eq(1)).all().item<bool>());
  CHECK(torch::equal(code, model->code(vectors)));
  const auto packed = encode_packed(model, vectors);
  CHECK(packed.sizes() == torch::IntArrayRef({360, 1}));
  CHECK(torch::equal(unpack_bits(packed, 16), code.to(torch::kBool)));
  CHECK(hamming_precision_at_k(packed, labels, 5) > 0.9);

  // The same seeds give the same codes.
  torch::manual_seed(30);
  BinaryAutoencoder twin(BinaryAutoencoderOptions(24, 16).hidden(64));
  train_binary_autoencoder(twin, vectors, options);
  CHECK(torch::equal(encode_packed(twin, vectors), packed));

  CHECK_THROWS_WITH(model->code(torch::randn({4, 23})), Catch::Contains("[N, 24]"));
  CHECK_THROWS_WITH(BinaryAutoencoder(BinaryAutoencoderOptions(24, 0)), Catch::Contains("bits"));
  CHECK_THROWS_WITH(train_binary_autoencoder(model, torch::randn({8, 5}), options),
                    Catch::Contains("[N, 24]"));
}

TEST_CASE("Code files round-trip and bad ones are refused, naming the file", "[codes]") {
  torch::manual_seed(4);
  TempDir dir;
  const auto index = clustered_index(3, 10, 8);
  BinaryCodes codes = codes_of_index(index, pack_bits(random_bits(30, 70)), 70);
  codes.input = "fc7";
  codes.index_path = "x.index";
  codes.training = R"({"seed": 3})";
  save_binary_codes(codes, dir / "a.codes");
  const auto back = load_binary_codes(dir / "a.codes");
  CHECK(torch::equal(back.codes, codes.codes));
  CHECK(torch::equal(back.labels, codes.labels));
  CHECK(back.bits == 70);
  CHECK(back.descriptions == codes.descriptions);
  CHECK(back.dataset_indices == codes.dataset_indices);
  CHECK(back.class_names == codes.class_names);
  CHECK(back.data_source == "synthetic");
  CHECK(nlohmann::json::parse(back.training)["seed"] == 3);

  CHECK_THROWS_WITH(load_binary_codes(dir / "missing.codes"), Catch::Contains("missing.codes"));
  save_feature_index(index, dir / "x.index");
  CHECK_THROWS_WITH(load_binary_codes(dir / "x.index"),
                    Catch::Contains("x.index") && Catch::Contains("not a code file"));
  std::filesystem::resize_file(dir / "a.codes", std::filesystem::file_size(dir / "a.codes") - 9);
  CHECK_THROWS_WITH(load_binary_codes(dir / "a.codes"),
                    Catch::Contains("a.codes") && Catch::Contains("truncated"));

  BinaryCodes wrong = codes;
  wrong.bits = 200;
  CHECK_THROWS_WITH(save_binary_codes(wrong, dir / "b.codes"), Catch::Contains("200 bits"));
  FeatureIndex no_pixels = index;
  no_pixels.pixels = torch::Tensor();
  CHECK_THROWS_WITH(index_vectors(no_pixels, "pixels", "np.index"),
                    Catch::Contains("np.index") && Catch::Contains("no pixel vectors"));
  CHECK_THROWS_WITH(index_vectors(index, "fc8", "x.index"), Catch::Contains("'fc8'"));
}

TEST_CASE("alexnet codes writes codes that neighbours searches and scores", "[codes][cli]") {
  torch::manual_seed(5);
  TempDir dir;
  save_feature_index(clustered_index(4, 25, 32), dir / "blobs.index");
  const std::string index = dir / "blobs.index", codes = dir / "blobs.codes";

  auto result = run_alexnet("codes --index " + index + " --bits 16 --hidden 32 --epochs 60 " +
                                "--batch-size 16 --lr 0.003 --threads 1 --out " + codes + " --json",
                            dir);
  INFO(result.output);
  REQUIRE(result.status == 0);
  REQUIRE(std::filesystem::exists(codes));
  CHECK(load_binary_codes(codes).bits == 16);

  result = run_alexnet("neighbours --index " + index + " --codes " + codes +
                           " --precision-at 3 --pixels --speed --json --threads 1",
                       dir);
  INFO(result.output);
  REQUIRE(result.status == 0);
  const auto scores = nlohmann::json::parse(result.output.substr(result.output.find('{')));
  CHECK(scores["fc7"].get<double>() > 0.95);
  CHECK(scores["codes"]["precision"].get<double>() > 0.8);
  CHECK(scores["codes"]["bits"] == 16);
  CHECK(scores["search_speed"]["hamming_queries_per_second"].get<double>() > 0);
  CHECK(scores["search_speed"]["items"] == 100);

  result = run_alexnet("neighbours --codes " + codes + " --k 3 --json '#5'", dir);
  INFO(result.output);
  REQUIRE(result.status == 0);
  const auto listed = nlohmann::json::parse(result.output.substr(result.output.find('[')));
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["neighbours"][0]["position"] == 5);
  CHECK(listed[0]["neighbours"].size() == 4);

  // Bad inputs: a missing index, an unknown input, an image query with codes, --speed alone.
  result = run_alexnet("codes --index " + (dir / "nope.index") + " --out " + codes, dir);
  CHECK(result.status != 0);
  CHECK_THAT(result.output, Catch::Contains("nope.index"));
  result = run_alexnet("codes --index " + index + " --input fc9 --out " + codes, dir);
  CHECK(result.status != 0);
  CHECK_THAT(result.output, Catch::Contains("fc9"));
  result = run_alexnet("neighbours --codes " + codes + " picture.png", dir);
  CHECK(result.status != 0);
  CHECK_THAT(result.output, Catch::Contains("#N"));
  result = run_alexnet("neighbours --codes " + codes + " --precision-at 3 --speed", dir);
  CHECK(result.status != 0);
  CHECK_THAT(result.output, Catch::Contains("--speed needs"));
}

}  // namespace test_codes
