// `alexnet codes`: short binary codes of fc7 features or raw pixels (the paper's section 6.1).
#include <iomanip>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "cli/option_groups.h"
#include "experiments/binary_codes.h"
#include "experiments/feature_index.h"
#include "runtime/runtime.h"

namespace alexnet::cli {
namespace {

ArgParser codes_parser() {
  ArgParser parser(
      "alexnet codes --index INDEX --out CODES [--input fc7|pixels] [--bits B]",
      "Trains an autoencoder with a binary bottleneck of B bits on the fc7 features (or the "
      "raw-pixel vectors) of a feature index written by `alexnet features`, encodes every "
      "image of the index and writes the packed codes with the labels. `alexnet neighbours "
      "--codes CODES` searches them by Hamming distance.");
  parser.option("index", "feature index to encode (written by `alexnet features`)")
      .option("train-index", "feature index to train the autoencoder on (default: --index)")
      .option("input", "what to encode: fc7 or pixels", "fc7");
  // The autoencoder and its training.
  parser.option("bits", "bits per code", "64")
      .option("hidden", "hidden units on each side of the bottleneck", "512")
      .option("noise", "std of the noise on the bottleneck's logits while training", "1.0")
      .option("epochs", "training epochs", "30")
      .option("batch-size", "vectors per step", "128")
      .option("lr", "Adam learning rate", "0.001")
      .option("seed", "seed of the initialisation, shuffling and noise", "0")
      .option("out", "code file to write");
  add_threads_option(parser);
  parser.flag("json", "print a JSON summary");
  return parser;
}

// The vectors to encode (--input of --index) and those to train on (of --train-index).
struct CodeInputs {
  experiments::FeatureIndex index;
  torch::Tensor vectors, train_vectors;
  std::string index_path, train_path, input;
};

CodeInputs read_code_inputs(const ArgParser& parser) {
  CodeInputs in;
  in.index_path = parser.get("index");
  in.input = parser.get("input");
  in.index = experiments::load_feature_index(in.index_path);
  in.vectors = experiments::index_vectors(in.index, in.input, in.index_path);
  in.train_path = parser.has("train-index") ? parser.get("train-index") : in.index_path;
  in.train_vectors = in.vectors;
  if (in.train_path != in.index_path) {
    in.train_vectors = experiments::index_vectors(experiments::load_feature_index(in.train_path),
                                                  in.input, in.train_path);
    TORCH_CHECK(in.train_vectors.size(1) == in.vectors.size(1), "--train-index ", in.train_path,
                " holds ", in.train_vectors.size(1), "-d ", in.input, " vectors but --index ",
                in.index_path, " holds ", in.vectors.size(1), "-d ones");
  }
  return in;
}

// Trains the autoencoder on the training vectors, printing the loss now and then; returns the
// loss of each epoch.
std::vector<double> train_codes(experiments::BinaryAutoencoder& model, const CodeInputs& in,
                                const experiments::CodeTrainingOptions& training) {
  return experiments::train_binary_autoencoder(
      model, in.train_vectors, training, [&](int64_t epoch, double loss) {
        if (epoch == 1 || epoch % 10 == 0 || epoch == training.epochs) {
          std::cerr << "codes: epoch " << epoch << " / " << training.epochs << ", training loss "
                    << loss << "\n";
        }
      });
}

void print_codes_summary(const nlohmann::json& summary) {
  std::cout << std::fixed << std::setprecision(4) << "wrote " << summary["out"].get<std::string>()
            << ": " << summary["images"].get<int64_t>() << " " << summary["bits"].get<int64_t>()
            << "-bit codes of " << summary["input_dim"].get<int64_t>() << "-d "
            << summary["input"].get<std::string>() << " vectors\n  training loss "
            << summary["first_epoch_loss"].get<double>() << " -> "
            << summary["last_epoch_loss"].get<double>()
            << " (standardised MSE; 1 = predicting the mean), "
            << "reconstruction loss (eval, thresholded) "
            << summary["reconstruction_loss"].get<double>() << ", share of ones "
            << summary["share_of_ones"].get<double>() << "\n";
}

int run_codes(const std::vector<std::string>& args) {
  ArgParser parser = codes_parser();
  if (!parser.parse(args)) return 0;
  runtime::tune_runtime({"codes"}, args);
  apply_threads_option(parser);
  require_options(parser, {"index", "out"}, "codes");
  const CodeInputs in = read_code_inputs(parser);

  const auto seed = static_cast<uint64_t>(parser.get_int("seed"));
  experiments::CodeTrainingOptions training;
  training.epochs = parser.get_int("epochs");
  training.batch_size = parser.get_int("batch-size");
  training.lr = parser.get_double("lr");
  training.seed = seed;
  torch::manual_seed(seed);
  experiments::BinaryAutoencoder model(
      experiments::BinaryAutoencoderOptions(in.vectors.size(1), parser.get_int("bits"))
          .hidden(parser.get_int("hidden"))
          .noise(parser.get_double("noise")));
  const auto losses = train_codes(model, in, training);
  const double test_loss = model->reconstruction_loss(in.vectors);

  const int64_t bits = model->options().bits();
  auto codes =
      experiments::codes_of_index(in.index, experiments::encode_packed(model, in.vectors), bits);
  const double ones =
      experiments::unpack_bits(codes.codes, bits).to(torch::kFloat).mean().item<double>();
  nlohmann::json summary{{"index", in.index_path},
                         {"train_index", in.train_path},
                         {"input", in.input},
                         {"input_dim", in.vectors.size(1)},
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
  codes.input = in.input;
  codes.index_path = in.index_path;
  codes.training = summary.dump();
  experiments::save_binary_codes(codes, parser.get("out"));
  summary["out"] = parser.get("out");
  summary["images"] = codes.size();
  if (parser.get_flag("json")) {
    std::cout << summary.dump(2) << "\n";
  } else {
    print_codes_summary(summary);
  }
  return 0;
}

const Registration kCodes{"codes", "binary codes of fc7 features or pixels (section 6.1)",
                          run_codes};

}  // namespace
}  // namespace alexnet::cli
