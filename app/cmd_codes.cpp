// `alexnet codes`: short binary codes of fc7 features or raw pixels (the paper's section 6.1).
#include <iomanip>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "experiments/binary_codes.h"
#include "experiments/feature_index.h"
#include "runtime/runtime.h"

namespace alexnet::cli {
namespace {

int run_codes(const std::vector<std::string>& args) {
  ArgParser parser(
      "alexnet codes --index INDEX --out CODES [--input fc7|pixels] [--bits B]",
      "Trains an autoencoder with a binary bottleneck of B bits on the fc7 features (or the "
      "raw-pixel vectors) of a feature index written by `alexnet features`, encodes every "
      "image of the index and writes the packed codes with the labels. `alexnet neighbours "
      "--codes CODES` searches them by Hamming distance.");
  parser.option("index", "feature index to encode (written by `alexnet features`)")
      .option("train-index", "feature index to train the autoencoder on (default: --index)")
      .option("input", "what to encode: fc7 or pixels", "fc7")
      .option("bits", "bits per code", "64")
      .option("hidden", "hidden units on each side of the bottleneck", "512")
      .option("noise", "std of the noise on the bottleneck's logits while training", "1.0")
      .option("epochs", "training epochs", "30")
      .option("batch-size", "vectors per step", "128")
      .option("lr", "Adam learning rate", "0.001")
      .option("seed", "seed of the initialisation, shuffling and noise", "0")
      .option("out", "code file to write")
      .option("threads", "intra-op threads (0: all cores)", "0")
      .flag("json", "print a JSON summary");
  if (!parser.parse(args)) return 0;
  runtime::tune_runtime({"codes"}, args);
  runtime::set_threads(parser.get_int("threads"));
  for (const char* required : {"index", "out"}) {
    if (!parser.has(required)) {
      throw std::invalid_argument(std::string("--") + required +
                                  " is required (see alexnet codes --help)");
    }
  }
  const std::string index_path = parser.get("index"), input = parser.get("input");
  const auto index = experiments::load_feature_index(index_path);
  const auto vectors = experiments::index_vectors(index, input, index_path);
  const std::string train_path = parser.has("train-index") ? parser.get("train-index") : index_path;
  torch::Tensor train_vectors = vectors;
  if (train_path != index_path) {
    train_vectors =
        experiments::index_vectors(experiments::load_feature_index(train_path), input, train_path);
    TORCH_CHECK(train_vectors.size(1) == vectors.size(1), "--train-index ", train_path, " holds ",
                train_vectors.size(1), "-d ", input, " vectors but --index ", index_path, " holds ",
                vectors.size(1), "-d ones");
  }

  const auto seed = static_cast<uint64_t>(parser.get_int("seed"));
  experiments::CodeTrainingOptions training;
  training.epochs = parser.get_int("epochs");
  training.batch_size = parser.get_int("batch-size");
  training.lr = parser.get_double("lr");
  training.seed = seed;
  torch::manual_seed(seed);
  experiments::BinaryAutoencoder model(
      experiments::BinaryAutoencoderOptions(vectors.size(1), parser.get_int("bits"))
          .hidden(parser.get_int("hidden"))
          .noise(parser.get_double("noise")));
  const auto losses = experiments::train_binary_autoencoder(
      model, train_vectors, training, [&](int64_t epoch, double loss) {
        if (epoch == 1 || epoch % 10 == 0 || epoch == training.epochs) {
          std::cerr << "codes: epoch " << epoch << " / " << training.epochs << ", training loss "
                    << loss << "\n";
        }
      });
  const double test_loss = model->reconstruction_loss(vectors);

  const int64_t bits = model->options().bits();
  auto codes = experiments::codes_of_index(index, experiments::encode_packed(model, vectors), bits);
  const double ones =
      experiments::unpack_bits(codes.codes, bits).to(torch::kFloat).mean().item<double>();
  nlohmann::json summary{{"index", index_path},
                         {"train_index", train_path},
                         {"input", input},
                         {"input_dim", vectors.size(1)},
                         {"bits", bits},
                         {"hidden", model->options().hidden()},
                         {"noise", model->options().noise()},
                         {"epochs", training.epochs},
                         {"batch_size", training.batch_size},
                         {"lr", training.lr},
                         {"seed", seed},
                         {"first_epoch_loss", losses.front()},
                         {"last_epoch_loss", losses.back()},
                         {"reconstruction_loss", test_loss},
                         {"share_of_ones", ones}};
  codes.input = input;
  codes.index_path = index_path;
  codes.training = summary.dump();
  experiments::save_binary_codes(codes, parser.get("out"));
  summary["out"] = parser.get("out");
  summary["images"] = codes.size();
  if (parser.get_flag("json")) {
    std::cout << summary.dump(2) << "\n";
  } else {
    std::cout << std::fixed << std::setprecision(4) << "wrote " << parser.get("out") << ": "
              << codes.size() << " " << bits << "-bit codes of " << vectors.size(1) << "-d "
              << input << " vectors\n  training loss " << losses.front() << " -> " << losses.back()
              << " (standardised MSE; 1 = predicting the mean), "
              << "reconstruction loss (eval, thresholded) " << test_loss << ", share of ones "
              << ones << "\n";
  }
  return 0;
}

const Registration kCodes{"codes", "binary codes of fc7 features or pixels (section 6.1)",
                          run_codes};

}  // namespace
}  // namespace alexnet::cli
