#include "experiments/binary_codes.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "experiments/tensor_file.h"

namespace alexnet::experiments {
namespace {

constexpr char kCodeMagic[8] = {'A', 'L', 'X', 'C', 'O', 'D', 'E', '1'};
const TensorFileKind kCodeFile{kCodeMagic, "code file", "alexnet codes"};
constexpr int64_t kWordBits = 64;

int64_t words_for(int64_t bits) { return (bits + kWordBits - 1) / kWordBits; }

void check_packed(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.defined() && t.dim() == 2 && t.size(0) > 0 && t.size(1) > 0 &&
                  t.scalar_type() == torch::kLong,
              what, ": expected non-empty packed codes [N, W] int64, got ",
              t.defined() ? t.sizes() : torch::IntArrayRef{},
              t.defined() ? " " + std::string(c10::toString(t.scalar_type())) : std::string());
}

// Hamming distances from one packed query to n packed codes of `words` words each.
template <int64_t kWords>
inline void distances_loop(const uint64_t* query, const uint64_t* codes, int64_t n, int64_t words,
                           uint16_t* out) {
  const int64_t w = kWords > 0 ? kWords : words;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t* row = codes + i * w;
    int d = 0;
    for (int64_t j = 0; j < w; ++j) d += __builtin_popcountll(query[j] ^ row[j]);
    out[i] = static_cast<uint16_t>(d);
  }
}

template <int64_t kWords>
#if defined(__x86_64__)
__attribute__((target("popcnt")))
#endif
void distances_popcnt(const uint64_t* query, const uint64_t* codes, int64_t n, int64_t words,
                      uint16_t* out) {
  distances_loop<kWords>(query, codes, n, words, out);
}

template <int64_t kWords>
void distances_portable(const uint64_t* query, const uint64_t* codes, int64_t n, int64_t words,
                        uint16_t* out) {
  distances_loop<kWords>(query, codes, n, words, out);
}

void hamming_row(const uint64_t* query, const uint64_t* codes, int64_t n, int64_t words,
                 uint16_t* out) {
#if defined(__x86_64__)
  static const bool has_popcnt = __builtin_cpu_supports("popcnt");
#else
  const bool has_popcnt = false;
#endif
  switch (has_popcnt ? words : -words) {
    case 1:
      return distances_popcnt<1>(query, codes, n, words, out);
    case 2:
      return distances_popcnt<2>(query, codes, n, words, out);
    case 4:
      return distances_popcnt<4>(query, codes, n, words, out);
    case -1:
      return distances_portable<1>(query, codes, n, words, out);
    default:
      if (has_popcnt) return distances_popcnt<0>(query, codes, n, words, out);
      return distances_portable<0>(query, codes, n, words, out);
  }
}

// The k nearest of n rows with distances `d` (0..max_distance), nearest first, ties by row
// index with `self` first among equals (or left out). Counting sort: O(n + max_distance).
void select_nearest(const uint16_t* d, int64_t n, int64_t max_distance, int64_t k, int64_t self,
                    bool exclude_self, std::vector<int64_t>& counts, std::vector<int64_t>& out) {
  counts.assign(static_cast<size_t>(max_distance + 2), 0);
  for (int64_t i = 0; i < n; ++i) ++counts[d[i]];
  const bool has_self = self >= 0 && self < n;
  if (has_self && exclude_self) --counts[d[self]];
  // threshold: the largest distance that is kept; offsets: first output slot per distance.
  std::vector<int64_t> offsets(static_cast<size_t>(max_distance + 1), 0);
  int64_t taken = 0, threshold = max_distance;
  for (int64_t t = 0; t <= max_distance; ++t) {
    offsets[static_cast<size_t>(t)] = taken;
    taken += counts[static_cast<size_t>(t)];
    if (taken >= k) {
      threshold = t;
      break;
    }
  }
  const int64_t keep = std::min(k, taken);
  out.assign(static_cast<size_t>(keep), -1);
  if (has_self && !exclude_self && d[self] <= threshold) {
    const auto slot = offsets[d[self]]++;
    if (slot < keep) out[static_cast<size_t>(slot)] = self;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (i == self || d[i] > threshold) continue;
    const auto slot = offsets[d[i]]++;
    if (slot < keep) out[static_cast<size_t>(slot)] = i;
  }
}

const uint64_t* words_of(const torch::Tensor& packed) {
  return reinterpret_cast<const uint64_t*>(packed.data_ptr<int64_t>());
}

}  // namespace

BinaryAutoencoderImpl::BinaryAutoencoderImpl(BinaryAutoencoderOptions options) : options_(options) {
  TORCH_CHECK(options_.input_dim() > 0, "BinaryAutoencoder: input_dim must be positive, got ",
              options_.input_dim());
  TORCH_CHECK(options_.bits() > 0, "BinaryAutoencoder: bits must be positive, got ",
              options_.bits());
  TORCH_CHECK(options_.hidden() > 0, "BinaryAutoencoder: hidden must be positive, got ",
              options_.hidden());
  TORCH_CHECK(options_.noise() >= 0, "BinaryAutoencoder: noise must not be negative, got ",
              options_.noise());
  encode1_ = register_module("encode1", torch::nn::Linear(options_.input_dim(), options_.hidden()));
  encode2_ = register_module("encode2", torch::nn::Linear(options_.hidden(), options_.bits()));
  decode1_ = register_module("decode1", torch::nn::Linear(options_.bits(), options_.hidden()));
  decode2_ = register_module("decode2", torch::nn::Linear(options_.hidden(), options_.input_dim()));
  mean_ = register_buffer("mean", torch::zeros({options_.input_dim()}));
  scale_ = register_buffer("scale", torch::ones({}));
}

void BinaryAutoencoderImpl::set_standardisation(const torch::Tensor& vectors) {
  TORCH_CHECK(vectors.dim() == 2 && vectors.size(0) > 0 && vectors.size(1) == options_.input_dim(),
              "BinaryAutoencoder: expected training vectors [N, ", options_.input_dim(), "], got ",
              vectors.sizes());
  torch::NoGradGuard no_grad;
  const auto v = vectors.to(torch::kFloat);
  mean_.copy_(v.mean(0));
  scale_.copy_((v - mean_).pow(2).mean().sqrt().clamp_min(1e-8));
}

torch::Tensor BinaryAutoencoderImpl::standardise(const torch::Tensor& vectors) const {
  TORCH_CHECK(vectors.dim() == 2 && vectors.size(1) == options_.input_dim(),
              "BinaryAutoencoder: expected vectors [N, ", options_.input_dim(), "], got ",
              vectors.sizes());
  return (vectors.to(torch::kFloat) - mean_) / scale_;
}

torch::Tensor BinaryAutoencoderImpl::code(const torch::Tensor& vectors) {
  const auto logits = encode2_(torch::relu(encode1_(standardise(vectors))));
  if (!is_training()) return logits.gt(0).to(torch::kFloat);
  const auto noisy =
      options_.noise() > 0 ? logits + options_.noise() * torch::randn_like(logits) : logits;
  const auto p = torch::sigmoid(noisy);
  return p + (p.gt(0.5).to(torch::kFloat) - p).detach();
}

torch::Tensor BinaryAutoencoderImpl::decode(const torch::Tensor& code) {
  TORCH_CHECK(code.dim() == 2 && code.size(1) == options_.bits(),
              "BinaryAutoencoder: expected codes [N, ", options_.bits(), "], got ", code.sizes());
  return decode2_(torch::relu(decode1_(code)));
}

torch::Tensor BinaryAutoencoderImpl::forward(const torch::Tensor& vectors) {
  return decode(code(vectors));
}

double BinaryAutoencoderImpl::reconstruction_loss(const torch::Tensor& vectors) {
  torch::NoGradGuard no_grad;
  double total = 0;
  const int64_t n = vectors.size(0), chunk = 1024;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const auto x = vectors.slice(0, begin, std::min(n, begin + chunk));
    total += torch::mse_loss(forward(x), standardise(x), torch::Reduction::Sum).item<double>();
  }
  return total / static_cast<double>(n * options_.input_dim());
}

std::vector<double> train_binary_autoencoder(BinaryAutoencoder& model, const torch::Tensor& vectors,
                                             const CodeTrainingOptions& options,
                                             const std::function<void(int64_t, double)>& progress) {
  TORCH_CHECK(options.epochs >= 1, "codes: epochs must be positive, got ", options.epochs);
  TORCH_CHECK(options.batch_size >= 1, "codes: batch size must be positive, got ",
              options.batch_size);
  TORCH_CHECK(options.lr > 0, "codes: learning rate must be positive, got ", options.lr);
  model->set_standardisation(vectors);
  torch::manual_seed(options.seed);
  const auto v = vectors.to(torch::kFloat).contiguous();
  const int64_t n = v.size(0);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(options.lr));
  model->train();
  std::vector<double> losses;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    const auto order = torch::randperm(n, torch::kLong);
    double total = 0;
    for (int64_t begin = 0; begin < n; begin += options.batch_size) {
      const auto rows = order.slice(0, begin, std::min(n, begin + options.batch_size));
      const auto x = v.index_select(0, rows);
      const auto loss = torch::mse_loss(model->forward(x), model->standardise(x));
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      total += loss.item<double>() * static_cast<double>(rows.size(0));
    }
    losses.push_back(total / static_cast<double>(n));
    if (progress) progress(epoch + 1, losses.back());
  }
  model->eval();
  return losses;
}

torch::Tensor pack_bits(const torch::Tensor& bits) {
  TORCH_CHECK(bits.defined() && bits.dim() == 2 && bits.size(1) > 0,
              "pack_bits: expected bits [N, B], got ",
              bits.defined() ? bits.sizes() : torch::IntArrayRef{});
  const auto b = bits.ne(0).to(torch::kCPU).contiguous();
  const int64_t n = b.size(0), count = b.size(1), words = words_for(count);
  auto packed = torch::zeros({n, words}, torch::kLong);
  const bool* in = b.data_ptr<bool>();
  auto* out = reinterpret_cast<uint64_t*>(packed.data_ptr<int64_t>());
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < count; ++j) {
      if (in[i * count + j]) out[i * words + j / kWordBits] |= uint64_t{1} << (j % kWordBits);
    }
  }
  return packed;
}

torch::Tensor unpack_bits(const torch::Tensor& packed, int64_t bits) {
  check_packed(packed, "unpack_bits");
  TORCH_CHECK(bits >= 1 && words_for(bits) <= packed.size(1), "unpack_bits: ", bits,
              " bits do not fit in ", packed.size(1), " words");
  const auto p = packed.contiguous();
  const int64_t n = p.size(0), words = p.size(1);
  auto out = torch::zeros({n, bits}, torch::kBool);
  const uint64_t* in = words_of(p);
  bool* o = out.data_ptr<bool>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < bits; ++j) {
      o[i * bits + j] = (in[i * words + j / kWordBits] >> (j % kWordBits)) & 1U;
    }
  }
  return out;
}

torch::Tensor hamming_distances(const torch::Tensor& a, const torch::Tensor& b) {
  check_packed(a, "hamming_distances");
  check_packed(b, "hamming_distances");
  TORCH_CHECK(a.size(1) == b.size(1), "hamming_distances: codes of ", a.size(1), " and ", b.size(1),
              " words");
  const auto ac = a.contiguous(), bc = b.contiguous();
  const int64_t words = ac.size(1), nb = bc.size(0);
  std::vector<uint16_t> row(static_cast<size_t>(nb));
  auto out = torch::empty({ac.size(0), nb}, torch::kLong);
  auto* o = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < ac.size(0); ++i) {
    hamming_row(words_of(ac) + i * words, words_of(bc), nb, words, row.data());
    std::copy(row.begin(), row.end(), o + i * nb);
  }
  return out;
}

std::vector<std::vector<Neighbour>> hamming_neighbours(const torch::Tensor& codes,
                                                       const torch::Tensor& queries, int64_t k,
                                                       const std::vector<int64_t>& self,
                                                       bool exclude_self) {
  check_packed(codes, "hamming_neighbours codes");
  check_packed(queries, "hamming_neighbours queries");
  TORCH_CHECK(queries.size(1) == codes.size(1), "hamming_neighbours: queries have ",
              queries.size(1), " words, the codes ", codes.size(1));
  TORCH_CHECK(k >= 1, "hamming_neighbours: k must be positive, got ", k);
  TORCH_CHECK(self.empty() || static_cast<int64_t>(self.size()) == queries.size(0),
              "hamming_neighbours: ", self.size(), " self indices for ", queries.size(0),
              " queries");
  const auto c = codes.contiguous(), q = queries.contiguous();
  const int64_t n = c.size(0), words = c.size(1), nq = q.size(0);
  std::vector<std::vector<Neighbour>> result(static_cast<size_t>(nq));
  at::parallel_for(0, nq, 16, [&](int64_t begin, int64_t end) {
    std::vector<uint16_t> d(static_cast<size_t>(n));
    std::vector<int64_t> counts, nearest;
    for (int64_t i = begin; i < end; ++i) {
      hamming_row(words_of(q) + i * words, words_of(c), n, words, d.data());
      const int64_t me = self.empty() ? -1 : self[static_cast<size_t>(i)];
      select_nearest(d.data(), n, words * kWordBits, k, me, exclude_self, counts, nearest);
      auto& list = result[static_cast<size_t>(i)];
      for (int64_t r : nearest) list.push_back({r, static_cast<double>(d[static_cast<size_t>(r)])});
    }
  });
  return result;
}

double hamming_precision_at_k(const torch::Tensor& codes, const torch::Tensor& labels, int64_t k) {
  check_packed(codes, "hamming_precision_at_k codes");
  const int64_t n = codes.size(0);
  TORCH_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == n,
              "hamming_precision_at_k: expected [", n, "] labels, got ",
              labels.defined() ? labels.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(k >= 1 && k < n, "hamming_precision_at_k: k must be in 1..", n - 1, " for ", n,
              " codes, got ", k);
  const auto c = codes.contiguous();
  const auto l = labels.to(torch::kLong).contiguous();
  const int64_t* label = l.data_ptr<int64_t>();
  const int64_t words = c.size(1);
  std::vector<int64_t> hits_per_row(static_cast<size_t>(n), 0);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    std::vector<uint16_t> d(static_cast<size_t>(n));
    std::vector<int64_t> counts, nearest;
    for (int64_t i = begin; i < end; ++i) {
      hamming_row(words_of(c) + i * words, words_of(c), n, words, d.data());
      select_nearest(d.data(), n, words * kWordBits, k, i, /*exclude_self=*/true, counts, nearest);
      int64_t hits = 0;
      for (int64_t r : nearest) hits += label[r] == label[i];
      hits_per_row[static_cast<size_t>(i)] = hits;
    }
  });
  int64_t hits = 0;
  for (int64_t h : hits_per_row) hits += h;
  return static_cast<double>(hits) / static_cast<double>(n * k);
}

void BinaryCodes::validate() const {
  check_packed(codes, "code file codes");
  const int64_t n = codes.size(0);
  TORCH_CHECK(bits >= 1 && words_for(bits) == codes.size(1), "code file: ", bits, " bits need ",
              words_for(bits), " words per code, got ", codes.size(1));
  TORCH_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == n &&
                  labels.scalar_type() == torch::kLong,
              "code file: labels must be [", n, "] int64");
  TORCH_CHECK(static_cast<int64_t>(descriptions.size()) == n, "code file: ", descriptions.size(),
              " descriptions for ", n, " codes");
  TORCH_CHECK(static_cast<int64_t>(dataset_indices.size()) == n,
              "code file: ", dataset_indices.size(), " data set indices for ", n, " codes");
  const int64_t low = labels.min().item<int64_t>(), high = labels.max().item<int64_t>();
  TORCH_CHECK(low >= 0 && high < static_cast<int64_t>(class_names.size()),
              "code file: labels span ", low, "..", high, " but there are ", class_names.size(),
              " class names");
}

void save_binary_codes(const BinaryCodes& codes, const std::string& path) {
  codes.validate();
  nlohmann::json header;
  header["count"] = codes.size();
  header["bits"] = codes.bits;
  header["words"] = codes.codes.size(1);
  header["input"] = codes.input;
  header["index_path"] = codes.index_path;
  header["training"] =
      codes.training.empty() ? nlohmann::json::object() : nlohmann::json::parse(codes.training);
  header["class_names"] = codes.class_names;
  header["descriptions"] = codes.descriptions;
  header["dataset_indices"] = codes.dataset_indices;
  header["data_source"] = codes.data_source;
  header["split"] = codes.split;
  write_tensor_file(path, kCodeFile, header, {codes.codes, codes.labels});
}

BinaryCodes load_binary_codes(const std::string& path) {
  TensorFileReader file(path, kCodeFile);
  BinaryCodes codes;
  try {
    const auto header = nlohmann::json::parse(file.header_text());
    const int64_t n = header.at("count").get<int64_t>();
    const int64_t words = header.at("words").get<int64_t>();
    codes.bits = header.at("bits").get<int64_t>();
    TORCH_CHECK(n >= 1 && words >= 1, "bad sizes");
    codes.input = header.at("input").get<std::string>();
    codes.index_path = header.at("index_path").get<std::string>();
    codes.training = header.at("training").dump();
    codes.class_names = header.at("class_names").get<std::vector<std::string>>();
    codes.descriptions = header.at("descriptions").get<std::vector<std::string>>();
    codes.dataset_indices = header.at("dataset_indices").get<std::vector<int64_t>>();
    codes.data_source = header.at("data_source").get<std::string>();
    codes.split = header.at("split").get<std::string>();
    file.expect({{{n, words}, torch::kLong}, {{n}, torch::kLong}});
    codes.codes = torch::empty({n, words}, torch::kLong);
    codes.labels = torch::empty({n}, torch::kLong);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("code file " + path + " has a bad header: " + e.what());
  } catch (const c10::Error& e) {
    throw std::runtime_error("code file " + path +
                             " has a bad header: " + e.what_without_backtrace());
  }
  file.read(codes.codes, "codes");
  file.read(codes.labels, "labels");
  try {
    codes.validate();
  } catch (const c10::Error& e) {
    throw std::runtime_error("code file " + path +
                             " is inconsistent: " + e.what_without_backtrace());
  }
  return codes;
}

torch::Tensor index_vectors(const FeatureIndex& index, const std::string& input,
                            const std::string& path) {
  if (input == "fc7") return index.features;
  if (input == "pixels") {
    TORCH_CHECK(index.pixels.defined(), "feature index ", path,
                " holds no pixel vectors (written with --pixel-size 0)");
    return index.pixels;
  }
  TORCH_CHECK(false, "unknown input '", input, "': expected fc7 or pixels");
}

torch::Tensor encode_packed(BinaryAutoencoder& model, const torch::Tensor& vectors) {
  torch::NoGradGuard no_grad;
  model->eval();
  std::vector<torch::Tensor> parts;
  const int64_t n = vectors.size(0), chunk = 1024;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    parts.push_back(pack_bits(model->code(vectors.slice(0, begin, std::min(n, begin + chunk)))));
  }
  return torch::cat(parts);
}

BinaryCodes codes_of_index(const FeatureIndex& index, const torch::Tensor& packed, int64_t bits) {
  BinaryCodes codes;
  codes.codes = packed;
  codes.bits = bits;
  codes.labels = index.labels;
  codes.class_names = index.class_names;
  codes.descriptions = index.descriptions;
  codes.dataset_indices = index.dataset_indices;
  codes.data_source = index.data_source;
  codes.split = index.split;
  codes.validate();
  return codes;
}

SearchSpeed measure_search_speed(const torch::Tensor& vectors, const torch::Tensor& codes,
                                 int64_t bits, const torch::Tensor& labels, int64_t k) {
  TORCH_CHECK(vectors.dim() == 2 && codes.dim() == 2 && vectors.size(0) == codes.size(0),
              "search speed: ", vectors.sizes(), " vectors and ", codes.sizes(),
              " codes are not the same items");
  using Clock = std::chrono::steady_clock;
  auto seconds_of = [](auto&& run) {
    const auto start = Clock::now();
    run();
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  SearchSpeed speed;
  speed.items = vectors.size(0);
  speed.float_dim = vectors.size(1);
  speed.bits = bits;
  speed.threads = at::get_num_threads();
  const double float_s = seconds_of([&] { precision_at_k(vectors, labels, k); });
  const double hamming_s = seconds_of([&] { hamming_precision_at_k(codes, labels, k); });
  speed.float_queries_per_second = static_cast<double>(speed.items) / float_s;
  speed.hamming_queries_per_second = static_cast<double>(speed.items) / hamming_s;
  return speed;
}

}  // namespace alexnet::experiments
