// Tests of distributed/: configuration from the environment, sharding, the two-process
// data-parallel step against one process on the global batch (Gloo on 127.0.0.1), and the
// faults (port in use, unreachable master, WORLD_SIZE mismatch, a dead and a hung rank).
//
// Multi-process tests start this test binary again (launch_local_processes) running the
// hidden test case "distributed worker", which reads its scenario from the environment.
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <torch/torch.h>

#include "data/loader.h"
#include "distributed/communicator.h"
#include "distributed/environment.h"
#include "distributed/gradient_reducer.h"
#include "distributed/launcher.h"
#include "model/alexnet.h"
#include "tests/support.h"
#include "tests/train_support.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace test_distributed {

using namespace alexnet;
using namespace alexnet::distributed;
using namespace alexnet::train;
using alexnet::train::RunData;
using alexnet::train::RunOptions;
using alexnet::train::TrainConfig;
using alexnet::train::TrainSummary;
namespace fs = std::filesystem;
using namespace alexnet::testing;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Image i is [1, 6, 5] filled from i; label i % 3.
std::shared_ptr<InMemoryDataset> tiny_dataset(size_t size) {
  auto dataset = std::make_shared<InMemoryDataset>("tiny", std::vector<std::string>{"a", "b", "c"});
  for (size_t i = 0; i < size; ++i) {
    auto image = (torch::arange(30, torch::kLong).view({1, 6, 5}) + static_cast<int64_t>(i)) % 256;
    dataset->add(image.to(torch::kByte), static_cast<int64_t>(i % 3));
  }
  return dataset;
}

// Sets environment variables for one scope and restores them afterwards.
class ScopedEnv {
 public:
  ScopedEnv(std::vector<std::pair<std::string, std::string>> set, std::vector<std::string> unset) {
    for (const auto& name : unset) remember(name), unsetenv(name.c_str());
    for (const auto& [name, value] : set) remember(name), setenv(name.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
  }

 private:
  void remember(const std::string& name) {
    const char* value = std::getenv(name.c_str());
    saved_.emplace_back(name, value ? std::optional<std::string>(value) : std::nullopt);
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

const std::vector<std::string> kDistVars{"RANK",        "WORLD_SIZE",  "LOCAL_RANK",
                                         "MASTER_ADDR", "MASTER_PORT", "ALEXNET_RENDEZVOUS_FILE"};

std::string self_executable() { return fs::read_symlink("/proc/self/exe").string(); }

// Runs the hidden worker test case in `nproc` processes.
LaunchResult run_workers(const std::string& scenario, const fs::path& out, int64_t nproc = 2,
                         std::vector<std::pair<std::string, std::string>> env = {}) {
  LaunchOptions options;
  options.nproc = nproc;
  options.kill_grace = std::chrono::seconds(20);
  options.env = std::move(env);
  options.env.emplace_back("ALEXNET_TEST_SCENARIO", scenario);
  options.env.emplace_back("ALEXNET_TEST_OUT", out.string());
  options.env.emplace_back("OMP_NUM_THREADS", "1");
  return launch_local_processes(self_executable(), {"distributed worker"}, options);
}

// The small AlexNet of the data-parallel test: 64x64 grey images, 10 classes, no dropout, a
// quarter of the paper's width (the reduction's arithmetic does not depend on the width, and
// narrower layers only shorten the sums the tolerances are derived from).
AlexNetOptions small_alexnet(std::vector<torch::Device> devices = {torch::kCPU}) {
  return AlexNetOptions()
      .num_classes(10)
      .width(0.25)
      .in_channels(1)
      .dropout(0.0)
      .init(Init::kKaiming)
      .devices(std::move(devices));
}

constexpr int64_t kGlobalBatch = 8;
constexpr int64_t kSteps = 3;

// The global batch of step `step`: [8, 1, 64, 64] float64 and [8] labels, the same on every
// rank.
std::pair<torch::Tensor, torch::Tensor> global_batch(int64_t step) {
  auto generator = at::detail::createCPUGenerator(static_cast<uint64_t>(1000 + step));
  auto images = torch::randn({kGlobalBatch, 1, 64, 64}, generator).to(torch::kFloat64);
  auto labels = torch::randint(0, 10, {kGlobalBatch}, generator, torch::kLong);
  return {images, labels};
}

// How the data-parallel runs below are compared with one process.
//
// They compute the same function with sums in another order: each rank reduces over its half
// of the batch, then the all-reduce adds the halves. Both sides therefore run in float64. With
// unit roundoff u = 1.1e-16, a sum of n terms is off by at most n * u times the sum of the
// terms' magnitudes; the longest sums here have n < 10^4 (conv1's weight gradient over 8 images
// of 15 x 15 positions, conv3's 2304 inputs), so one gradient is off by < 1e-12 of its terms'
// magnitude. Three to eight SGD steps with momentum 0.9 add at most ten times that per step,
// and cancellation between terms of opposite sign can make the error a hundred times larger
// relative to the result: about 1e-8 of the distance the weights travelled, at worst.
//
// A real fault moves weights by a fraction of that distance, not by 1e-8 of it: a reducer that
// sums instead of averaging doubles every update (a difference of 1.0 times the distance), one
// that skips a bucket leaves those parameters with one rank's gradient (a difference of the
// order of the distance), a resume that loses the momentum buffers shortens the next updates
// by up to 90%. The test "float64 tells a data-parallel fault from rounding" checks the first
// of these.
constexpr double kMovementTolerance = 1e-8;

// The largest difference between `got` and `expected`, per tensor relative to the distance
// that training moved the tensor from `initial` (what a wrong gradient changes).
double worst_relative_to_movement(const std::vector<torch::Tensor>& got,
                                  const std::vector<torch::Tensor>& expected,
                                  const std::vector<torch::Tensor>& initial) {
  REQUIRE(got.size() == expected.size());
  REQUIRE(initial.size() == expected.size());
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double moved = (expected[i] - initial[i]).abs().max().item<double>();
    REQUIRE(moved > 0.0);
    worst = std::max(worst, (got[i] - expected[i]).abs().max().item<double>() / moved);
  }
  return worst;
}

torch::optim::SGD make_sgd(AlexNet& model) {
  return torch::optim::SGD(model->parameters(),
                           torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4));
}

std::vector<torch::Tensor> state_values(AlexNet& model) {
  std::vector<torch::Tensor> values;
  for (const auto& item : model->single_device_state()) values.push_back(item.value().clone());
  return values;
}

// Rank 0's initial weights, float64.
AlexNet initial_model(std::vector<torch::Device> devices) {
  torch::manual_seed(100);
  AlexNet model(small_alexnet(std::move(devices)));
  model->to(torch::kFloat64);
  return model;
}

// One process training on the whole global batch: the reference. `gradient_scale` 2 is what
// a reducer that forgot to divide by two processes would compute.
std::vector<torch::Tensor> reference_weights(std::vector<torch::Device> devices,
                                             double gradient_scale = 1.0) {
  AlexNet model = initial_model(std::move(devices));
  auto sgd = make_sgd(model);
  for (int64_t step = 0; step < kSteps; ++step) {
    auto [images, labels] = global_batch(step);
    sgd.zero_grad();
    (gradient_scale * torch::nn::functional::cross_entropy(model->forward(images), labels))
        .backward();
    sgd.step();
  }
  return state_values(model);
}

// `size` images [3, 64, 64] whose class (of 4) is a bright corner square over noise.
std::shared_ptr<InMemoryDataset> corner_dataset(size_t size, uint64_t seed) {
  auto dataset =
      std::make_shared<InMemoryDataset>("corner", std::vector<std::string>{"a", "b", "c", "d"});
  auto generator = at::detail::createCPUGenerator(seed);
  for (size_t i = 0; i < size; ++i) {
    const auto label = static_cast<int64_t>(i % 4);
    auto image = torch::randint(0, 80, {3, 64, 64}, generator, torch::kLong);
    image.narrow(1, (label / 2) * 32, 32).narrow(2, (label % 2) * 32, 32).add_(150);
    dataset->add(image.to(torch::kByte), label);
  }
  return dataset;
}

// The trainer's run on corner_dataset: 4 steps per epoch, flips, no dropout, a quarter of the
// paper's width.
TrainConfig trainer_config(int64_t max_steps) {
  TrainConfig c = small_train_config();
  c.model.dropout(0.0);
  c.data.workers = 0;
  c.epochs = 3;
  c.max_steps = max_steps;
  c.threads = 1;
  c.log_interval = 1;
  return c;
}

RunData corner_data() { return {corner_dataset(36, 1), corner_dataset(10, 2)}; }

std::atomic<bool> g_stop{false};
extern "C" void request_stop(int) { g_stop = true; }

TrainSummary run_trainer(int64_t max_steps, const std::string& run_dir, bool resume,
                         const DistributedConfig& distributed = {}, bool stop_on_sigint = false) {
  std::ostringstream log;
  RunOptions options = quiet_run(run_dir, log, resume);
  if (stop_on_sigint) {
    signal(SIGINT, request_stop);
    options.stop = &g_stop;
  }
  options.distributed = distributed;
  options.dtype = torch::kFloat64;  // comparable across process counts (kMovementTolerance)
  return train::train(trainer_config(max_steps), corner_data(), options);
}

// A TCP socket listening on 127.0.0.1 at a port the system chose; the caller closes it.
int listen_on_loopback() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  REQUIRE(listen(fd, 4) == 0);
  return fd;
}

// The local addresses ("0100007F:1F90", as /proc/net/tcp writes them) of the TCP sockets this
// process listens on, IPv4 and IPv6.
std::vector<std::string> listening_addresses() {
  std::set<std::string> inodes;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    const std::string target = fs::read_symlink(entry.path(), error).string();
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::vector<std::string> addresses;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode;
      if (state == "0A" && inodes.count(inode)) addresses.push_back(local);  // 0A: LISTEN
    }
  }
  return addresses;
}

// Whether a /proc/net/tcp{,6} address is on the loopback interface: 127.x.y.z, ::1, or
// 127.x.y.z mapped into IPv6 (the address is written as 32-bit words in host byte order).
bool is_loopback_hex(const std::string& address) {
  const std::string host = address.substr(0, address.find(':'));
  if (host.size() == 8) return host.substr(6) == "7F";
  return host == "00000000000000000000000001000000" ||
         (host.rfind("0000000000000000FFFF0000", 0) == 0 && host.substr(30) == "7F");
}

DistributedConfig worker_config() {
  auto config = distributed_config_from_env();
  const char* timeout = std::getenv("ALEXNET_TEST_TIMEOUT_MS");
  config.timeout = std::chrono::milliseconds(timeout ? std::atoll(timeout) : 60000);
  return config;
}

}  // namespace

// Started by the tests below in several processes; does nothing when run directly.
TEST_CASE("distributed worker", "[.dist-worker]") {
  const char* scenario_text = std::getenv("ALEXNET_TEST_SCENARIO");
  if (scenario_text == nullptr) return;
  const std::string scenario = scenario_text;
  const fs::path out = std::getenv("ALEXNET_TEST_OUT");
  torch::set_num_threads(1);
  auto config = worker_config();
  const std::string rank_name = "rank" + std::to_string(config.rank);

  if (scenario == "train" || scenario == "train-two-device") {
    Communicator communicator(config, torch::kCPU);
    // Different initial weights on every rank: the broadcast must make them equal.
    torch::manual_seed(static_cast<uint64_t>(100 + config.rank));
    const bool two = scenario == "train-two-device";
    AlexNet model(two ? small_alexnet({torch::kCPU, torch::kCPU}) : small_alexnet());
    model->to(torch::kFloat64);
    broadcast_module(communicator, *model);
    GradientReducerOptions reducer_options;
    reducer_options.bucket_bytes = 4 << 20;  // several buckets
    reducer_options.overlap = std::getenv("ALEXNET_TEST_NO_OVERLAP") == nullptr;
    GradientReducer reducer(communicator, parameters_in_backward_order(*model), reducer_options);
    auto sgd = make_sgd(model);
    const int64_t share = kGlobalBatch / config.world_size;
    for (int64_t step = 0; step < kSteps; ++step) {
      auto [images, labels] = global_batch(step);
      images = images.narrow(0, config.rank * share, share);
      labels = labels.narrow(0, config.rank * share, share);
      sgd.zero_grad();
      torch::nn::functional::cross_entropy(model->forward(images), labels).backward();
      reducer.synchronize();
      sgd.step();
    }
    torch::save(state_values(model), (out / (rank_name + ".pt")).string());
    std::ofstream(out / (rank_name + ".txt")) << reducer.bucket_count();
    communicator.barrier();
    return;
  }

  if (scenario == "trainer") {
    const int64_t max_steps = std::atoll(std::getenv("ALEXNET_TEST_MAX_STEPS"));
    const auto summary =
        run_trainer(max_steps, (out / "run").string(),
                    std::getenv("ALEXNET_TEST_RESUME") != nullptr, config, /*stop_on_sigint=*/true);
    {
      std::ofstream losses(out / (rank_name + "_losses.txt"), std::ios::app);
      losses.precision(17);
      for (double loss : summary.losses) losses << loss << "\n";
    }
    if (summary.interrupted) _exit(130);  // as `alexnet train` does
    return;
  }

  // Each rank reports the addresses it listens on once the job is connected, and the mode of
  // its rendezvous file's folder.
  if (scenario == "listen") {
    Communicator communicator(config, torch::kCPU);
    std::ofstream report(out / (rank_name + ".txt"));
    for (const auto& address : listening_addresses()) report << address << "\n";
    const fs::path folder = fs::path(config.rendezvous_file).parent_path();
    std::ofstream(out / (rank_name + "_folder.txt"))
        << folder.string() << "\n"
        << std::oct << static_cast<int>(fs::status(folder).permissions());
    communicator.barrier();
    return;
  }

  // Fault scenarios: rank 0 reports what it saw in rank0.txt.
  if (scenario == "dead" || scenario == "hung") {
    if (config.rank == 0) signal(SIGTERM, SIG_IGN);  // finish the report after rank 1 fails
    Communicator communicator(config, torch::kCPU);
    auto tensor = torch::ones({1000});
    communicator.all_reduce_sum(tensor);
    if (config.rank == 1) {
      if (scenario == "dead") _exit(3);
      signal(SIGTERM, SIG_DFL);  // stopped by the launcher without a Catch report
      std::this_thread::sleep_for(std::chrono::seconds(60));
      _exit(4);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const auto start = Clock::now();
    std::string message = "no error";
    try {
      communicator.all_reduce_sum(tensor);
    } catch (const DistributedError& e) {
      message = e.what();
    }
    std::ofstream(out / "rank0.txt") << seconds_since(start) << "\n" << message;
    _exit(scenario == "hung" ? 2 : 0);  // as a trainer would, after its error
  }
  FAIL("unknown scenario " << scenario);
}

TEST_CASE("DistributedConfig reads torchrun's variables", "[distributed]") {
  {
    ScopedEnv env({}, kDistVars);
    const auto config = distributed_config_from_env();
    CHECK(config.world_size == 1);
    CHECK(config.rank == 0);
    CHECK_FALSE(config.enabled());
  }
  {
    ScopedEnv env({{"RANK", "1"},
                   {"WORLD_SIZE", "4"},
                   {"LOCAL_RANK", "1"},
                   {"MASTER_ADDR", "10.0.0.7"},
                   {"MASTER_PORT", "29400"}},
                  {});
    const auto config = distributed_config_from_env();
    CHECK(config.rank == 1);
    CHECK(config.world_size == 4);
    CHECK(config.local_rank == 1);
    CHECK(config.master_addr == "10.0.0.7");
    CHECK(config.master_port == 29400);
    CHECK(config.rendezvous_file.empty());  // rank 0 hosts a TCP store for other machines
    CHECK(config.enabled());
  }
  auto error_of = [](std::vector<std::pair<std::string, std::string>> vars) {
    ScopedEnv env(std::move(vars), kDistVars);
    try {
      distributed_config_from_env();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  using Catch::Matchers::Contains;
  CHECK_THAT(
      error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "x"}, {"MASTER_PORT", "1234"}}),
      Contains("RANK=2") && Contains("[0, 1]"));
  CHECK_THAT(
      error_of(
          {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "x"}, {"MASTER_PORT", "70000"}}),
      Contains("MASTER_PORT=70000"));
  CHECK_THAT(error_of({{"WORLD_SIZE", "two"}}), Contains("WORLD_SIZE='two'"));
  CHECK_THAT(error_of({{"RANK", "0"}}), Contains("WORLD_SIZE is not"));
  CHECK_THAT(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1234"}}),
             Contains("MASTER_ADDR"));
  CHECK_THAT(error_of({{"RANK", "0"},
                       {"WORLD_SIZE", "2"},
                       {"LOCAL_RANK", "5"},
                       {"LOCAL_WORLD_SIZE", "2"},
                       {"MASTER_ADDR", "x"},
                       {"MASTER_PORT", "1234"}}),
             Contains("LOCAL_RANK=5") && Contains("LOCAL_WORLD_SIZE=2"));
}

TEST_CASE("The backend follows the device unless chosen", "[distributed]") {
  CHECK(resolve_backend("auto", torch::kCPU) == "gloo");
  CHECK(resolve_backend("gloo", torch::kCPU) == "gloo");
  CHECK_THROWS_WITH(resolve_backend("mpi", torch::kCPU),
                    Catch::Matchers::Contains("'mpi'") && Catch::Matchers::Contains("gloo"));
  CHECK_THROWS_WITH(resolve_backend("nccl", torch::kCPU), Catch::Matchers::Contains("nccl"));
  if (!nccl_available()) {
    CHECK(resolve_backend("auto", torch::Device("cuda:0")) == "gloo");
  }
}

TEST_CASE("Loader shards every global batch across ranks", "[distributed][loader]") {
  auto dataset = tiny_dataset(23);
  data::LoaderOptions options;
  options.batch_size = 6;
  options.workers = 0;
  options.seed = 5;
  options.drop_last = true;
  data::Loader whole(dataset, nullptr, options);
  std::vector<std::unique_ptr<data::Loader>> ranks;
  for (int64_t r = 0; r < 2; ++r) {
    auto shard_options = options;
    shard_options.rank = r;
    shard_options.world_size = 2;
    ranks.push_back(std::make_unique<data::Loader>(dataset, nullptr, shard_options));
    CHECK(ranks.back()->batches_per_epoch() == whole.batches_per_epoch());
  }
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    whole.start_epoch(epoch);
    for (auto& loader : ranks) loader->start_epoch(epoch);
    int64_t batches = 0;
    while (auto batch = whole.next()) {
      auto first = ranks[0]->next();
      auto second = ranks[1]->next();
      REQUIRE(first);
      REQUIRE(second);
      CHECK(first->images.size(0) == 3);
      std::vector<int64_t> joined = first->indices;
      joined.insert(joined.end(), second->indices.begin(), second->indices.end());
      CHECK(joined == batch->indices);
      CHECK(torch::equal(torch::cat({first->images, second->images}), batch->images));
      CHECK(torch::equal(torch::cat({first->labels, second->labels}), batch->labels));
      ++batches;
    }
    CHECK(batches == 3);
    CHECK_FALSE(ranks[0]->next());
  }
  auto bad = options;
  bad.world_size = 4;  // 6 is not a multiple of 4
  bad.rank = 1;
  CHECK_THROWS_WITH(data::Loader(dataset, nullptr, bad), Catch::Matchers::Contains("multiple"));
  bad.world_size = 2;
  bad.rank = 2;
  CHECK_THROWS_WITH(data::Loader(dataset, nullptr, bad), Catch::Matchers::Contains("rank 2"));
}

TEST_CASE("shard_for_rank splits a data set into disjoint parts", "[distributed]") {
  auto dataset = tiny_dataset(10);
  std::multiset<int64_t> seen;
  for (int64_t r = 0; r < 3; ++r) {
    auto shard = shard_for_rank(dataset, r, 3);
    CHECK(shard->size() == (r == 0 ? 4u : 3u));
    for (size_t i = 0; i < shard->size(); ++i) {
      // tiny_dataset's pixel 0 is the sample's index.
      seen.insert(shard->get(i).image[0][0][0].item<int64_t>());
    }
  }
  CHECK(seen == std::multiset<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK_THROWS(shard_for_rank(dataset, 3, 3));
}

TEST_CASE("Two processes train like one process on the global batch", "[distributed][slow]") {
  for (const std::string scenario : {"train", "train-two-device"}) {
    const bool two = scenario == "train-two-device";
    const auto expected =
        reference_weights(two ? std::vector<torch::Device>{torch::kCPU, torch::kCPU}
                              : std::vector<torch::Device>{torch::kCPU});
    AlexNet initial_single = initial_model({torch::kCPU});
    const auto initial = state_values(initial_single);
    // The two-device form also checks the path without overlap.
    for (const bool overlap : {!two}) {
      INFO(scenario << (overlap ? " with overlap" : " without overlap"));
      const auto out = fresh_dir(scenario);
      std::vector<std::pair<std::string, std::string>> env;
      if (!overlap) env.emplace_back("ALEXNET_TEST_NO_OVERLAP", "1");
      const auto result = run_workers(scenario, out, 2, env);
      REQUIRE(result.message == "");
      REQUIRE(result.exit_code == 0);
      CHECK(std::stoi(read_text(out / "rank0.txt")) > 2);  // several buckets
      for (const std::string rank : {"rank0", "rank1"}) {
        std::vector<torch::Tensor> weights;
        torch::load(weights, (out / (rank + ".pt")).string());
        const double worst = worst_relative_to_movement(weights, expected, initial);
        INFO(rank << ": largest difference " << worst << " of the distance moved");
        CHECK(worst < kMovementTolerance);
      }
      fs::remove_all(out);
    }
  }
}

TEST_CASE("float64 tells a data-parallel fault from rounding", "[distributed]") {
  // What a reducer that sums instead of averaging would compute, against the right result:
  // the difference is of the order of the distance moved, far above kMovementTolerance.
  AlexNet initial_single = initial_model({torch::kCPU});
  const auto initial = state_values(initial_single);
  const auto right = reference_weights({torch::kCPU});
  const auto summed = reference_weights({torch::kCPU}, /*gradient_scale=*/2.0);
  CHECK(worst_relative_to_movement(summed, right, initial) > 0.1);
  // And the same computation repeated agrees far inside the tolerance.
  CHECK(worst_relative_to_movement(reference_weights({torch::kCPU}), right, initial) <
        kMovementTolerance);
}

TEST_CASE("A local job listens on the loopback interface only", "[distributed]") {
  // listening_addresses() sees a socket that listens on 127.0.0.1 as such. (A job started
  // with torchrun's variables listens on every interface, [::] in /proc/net/tcp6: rank 0's
  // TCP store.)
  const int fd = listen_on_loopback();
  const auto own = listening_addresses();
  close(fd);
  REQUIRE(own.size() == 1);
  CHECK(is_loopback_hex(own[0]));
  CHECK_FALSE(is_loopback_hex("00000000:1F90"));
  CHECK_FALSE(is_loopback_hex("00000000000000000000000000000000:1F90"));

  const auto out = fresh_dir("listen");
  const auto result = run_workers("listen", out);
  INFO(result.message);
  REQUIRE(result.exit_code == 0);
  for (const std::string rank : {"rank0", "rank1"}) {
    std::istringstream report(read_text(out / (rank + ".txt")));
    for (std::string address; report >> address;) {
      INFO(rank << " listens on " << address);
      CHECK(is_loopback_hex(address));
    }
    // The ranks met in a file in a folder only this user may enter, removed afterwards.
    std::istringstream folder_report(read_text(out / (rank + "_folder.txt")));
    std::string folder;
    int mode = 0;
    folder_report >> folder >> std::oct >> mode;
    CHECK(folder.find("alexnet-rendezvous-") != std::string::npos);
    CHECK(mode == 0700);
    CHECK_FALSE(fs::exists(folder));
  }
  fs::remove_all(out);
}

TEST_CASE("A port in use is a clear error", "[distributed]") {
  const int fd = listen_on_loopback();
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  const int port = ntohs(address.sin_port);

  DistributedConfig config;
  config.world_size = 2;
  config.master_port = port;
  config.timeout = std::chrono::seconds(3);
  const auto start = Clock::now();
  CHECK_THROWS_WITH(Communicator(config, torch::kCPU),
                    Catch::Matchers::Contains("rank 0") &&
                        Catch::Matchers::Contains(std::to_string(port)) &&
                        Catch::Matchers::Contains("in use"));
  CHECK(seconds_since(start) < 15);
  close(fd);
}

TEST_CASE("An unreachable master or a missing rank fails within the timeout", "[distributed]") {
  DistributedConfig config;
  config.world_size = 2;
  config.master_port = find_free_port();  // nobody listens there
  config.timeout = std::chrono::seconds(2);
  config.rank = 1;
  auto start = Clock::now();
  CHECK_THROWS_WITH(Communicator(config, torch::kCPU),
                    Catch::Matchers::Contains("rank 1") &&
                        Catch::Matchers::Contains("cannot reach rank 0") &&
                        Catch::Matchers::Contains(std::to_string(config.master_port)));
  CHECK(seconds_since(start) < 15);

  config.rank = 0;  // alone: rank 1 never comes
  start = Clock::now();
  CHECK_THROWS_WITH(
      Communicator(config, torch::kCPU),
      Catch::Matchers::Contains("rank(s) 1") && Catch::Matchers::Contains("WORLD_SIZE=2"));
  CHECK(seconds_since(start) >= 1.9);
  CHECK(seconds_since(start) < 15);
}

TEST_CASE("Ranks that disagree on WORLD_SIZE are told so", "[distributed]") {
  const auto port = find_free_port();
  std::string errors[2];
  auto join = [&](int64_t rank, int64_t world_size) {
    DistributedConfig config;
    config.rank = rank;
    config.world_size = world_size;
    config.master_port = port;
    config.timeout = std::chrono::seconds(5);
    try {
      Communicator communicator(config, torch::kCPU);
      errors[rank] = "no error";
    } catch (const DistributedError& e) {
      errors[rank] = e.what();
    }
  };
  const auto start = Clock::now();
  std::thread first(join, 0, 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::thread second(join, 1, 3);
  first.join();
  second.join();
  for (const auto& error : errors) {
    CHECK_THAT(error, Catch::Matchers::Contains("WORLD_SIZE mismatch") &&
                          Catch::Matchers::Contains("WORLD_SIZE=2") &&
                          Catch::Matchers::Contains("WORLD_SIZE=3"));
  }
  CHECK(seconds_since(start) < 4);  // found out at once, not at the timeout
}

// What rank 0 wrote in a fault scenario: the seconds until its error, and the error's message.
std::pair<double, std::string> rank0_report(const fs::path& out) {
  std::istringstream report(read_text(out / "rank0.txt"));
  double seconds = 0;
  report >> seconds;
  return {seconds, std::string(std::istreambuf_iterator<char>(report), {})};
}

TEST_CASE("A dead rank stops the others with an error naming it", "[distributed]") {
  const auto out = fresh_dir("dead");
  const auto result = run_workers("dead", out, 2, {{"ALEXNET_TEST_TIMEOUT_MS", "20000"}});
  CHECK(result.failed_rank == 1);
  CHECK(result.exit_code == 3);
  CHECK_THAT(result.message, Catch::Matchers::Contains("rank 1") &&
                                 Catch::Matchers::Contains("exited with code 3"));
  const auto [seconds, message] = rank0_report(out);
  INFO(message);
  CHECK_THAT(message, Catch::Matchers::Contains("rank 1") && Catch::Matchers::Contains("gone"));
  CHECK(seconds < 20);  // a closed connection is noticed before the timeout
  fs::remove_all(out);
}

TEST_CASE("A hung rank makes the others fail after the timeout, naming it", "[distributed]") {
  const auto out = fresh_dir("hung");
  const auto start = Clock::now();
  const auto result = run_workers("hung", out, 2, {{"ALEXNET_TEST_TIMEOUT_MS", "2000"}});
  CHECK(seconds_since(start) < 30);  // rank 1 sleeps for 60 s: it was stopped
  const auto [seconds, message] = rank0_report(out);
  INFO(message);
  CHECK_THAT(message, Catch::Matchers::Contains("rank 0") &&
                          Catch::Matchers::Contains("rank 1 never started it") &&
                          Catch::Matchers::Contains("hung"));
  CHECK(seconds >= 1.5);
  CHECK(seconds < 10);
  // Rank 0 failed (exit code 2) and the launcher stopped the hung rank 1.
  CHECK(result.failed_rank == 0);
  CHECK(result.exit_code == 2);
  fs::remove_all(out);
}

TEST_CASE("alexnet's trainer in two processes, interrupted and resumed, matches one process",
          "[distributed][slow]") {
  const auto out = fresh_dir("trainer");
  torch::set_num_threads(1);
  constexpr int64_t kTotal = 8;  // two epochs of 4 steps
  const auto single = run_trainer(kTotal, (out / "single").string(), false);
  REQUIRE(single.losses.size() == kTotal);
  // The distance moved is measured from the weights after the first step.
  run_trainer(1, (out / "single1").string(), false);
  const auto single_initial =
      train::load_checkpoint((out / "single1" / "checkpoints" / "last.pt").string());

  // Ctrl-C to the launcher once rank 0 has logged its first step: every rank stops at the
  // same step, rank 0 writes the checkpoint, the exit code is 130.
  std::atomic<bool> launched{true};
  std::thread interrupter([&] {
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    while (launched && Clock::now() < deadline) {
      std::ifstream metrics(out / "run" / "metrics.jsonl");
      std::string line;
      if (std::getline(metrics, line)) {
        kill(getpid(), SIGINT);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  const auto first = run_workers("trainer", out, 2, {{"ALEXNET_TEST_MAX_STEPS", "8"}});
  launched = false;
  interrupter.join();
  CHECK(first.exit_code == 130);
  CHECK(first.failed_rank == -1);
  const auto stopped = train::load_checkpoint((out / "run" / "checkpoints" / "last.pt").string());
  CHECK(stopped.step >= 1);
  CHECK(stopped.step < kTotal);

  const auto second = run_workers("trainer", out, 2,
                                  {{"ALEXNET_TEST_MAX_STEPS", "8"}, {"ALEXNET_TEST_RESUME", "1"}});
  REQUIRE(second.message == "");

  for (const std::string rank : {"rank0", "rank1"}) {
    std::ifstream in(out / (rank + "_losses.txt"));
    std::vector<double> losses;
    for (double loss; in >> loss;) losses.push_back(loss);
    REQUIRE(losses.size() == single.losses.size());
    for (size_t i = 0; i < losses.size(); ++i) {
      INFO(rank << " step " << i + 1);
      // float64 losses of the same batches, summed in another order (see kMovementTolerance).
      CHECK(losses[i] == Approx(single.losses[i]).epsilon(kMovementTolerance));
    }
  }
  const auto expected =
      train::load_checkpoint((out / "single" / "checkpoints" / "last.pt").string());
  const auto got = train::load_checkpoint((out / "run" / "checkpoints" / "last.pt").string());
  CHECK(got.step == kTotal);
  std::vector<torch::Tensor> got_weights, expected_weights, initial_weights;
  for (const auto& item : expected.model) {
    got_weights.push_back(got.model[item.key()]);
    expected_weights.push_back(item.value());
    initial_weights.push_back(single_initial.model[item.key()]);
  }
  const double worst = worst_relative_to_movement(got_weights, expected_weights, initial_weights);
  INFO("largest difference " << worst << " of the distance moved");
  CHECK(worst < kMovementTolerance);
  // Rank 0 alone wrote the run folder's metrics: one line per step (log_interval 1) and
  // per epoch, from both runs.
  std::ifstream metrics(out / "run" / "metrics.jsonl");
  int64_t lines = 0;
  for (std::string line; std::getline(metrics, line);) ++lines;
  CHECK(lines == kTotal + 2);
  fs::remove_all(out);
}

}  // namespace test_distributed
