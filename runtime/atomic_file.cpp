#include "runtime/atomic_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

namespace alexnet::runtime {
namespace {

namespace fs = std::filesystem;

// "<what> '<path>': <the error of errno>".
std::runtime_error io_error(const std::string& what, const std::string& path) {
  return std::runtime_error(what + " '" + path + "': " + std::strerror(errno));
}

void sync_folder(const fs::path& folder) {
  const int fd = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

bool is_atomic_file_temporary(const std::string& name) {
  // TARGET.XXXXXX.tmp, TARGET a file name with an extension of its own.
  const std::string suffix = ".tmp";
  if (name.size() < 1 + 7 + suffix.size() ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return false;
  }
  const size_t dot = name.size() - suffix.size() - 7;
  if (name[dot] != '.') return false;
  for (size_t i = dot + 1; i < dot + 7; ++i) {
    if (!std::isalnum(static_cast<unsigned char>(name[i]))) return false;
  }
  const std::string target = name.substr(0, dot);
  const size_t extension = target.rfind('.');
  return extension != std::string::npos && extension > 0 && extension + 1 < target.size();
}

void remove_stale_temporaries(const std::string& folder, const std::string& target) {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(folder.empty() ? "." : folder, error)) {
    const std::string name = entry.path().filename().string();
    if (!is_atomic_file_temporary(name)) continue;
    // TARGET.XXXXXX.tmp: the target's name and 11 characters.
    if (!target.empty() &&
        (name.size() != target.size() + 11 || name.rfind(target + ".", 0) != 0)) {
      continue;
    }
    // Each live AtomicFile holds a lock on its own temporary file: one whose lock can be
    // taken was left by a process that ended (kill -9).
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      // A link under such a name is no writer's file (they are created regular): the link goes.
      if (errno == ELOOP) ::unlink(entry.path().c_str());
      continue;
    }
    struct stat info {};
    if (::fstat(fd, &info) == 0 && S_ISREG(info.st_mode) && ::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      ::unlink(entry.path().c_str());
    }
    ::close(fd);
  }
}

std::string replace_problem(const std::string& path) {
  // Renaming over a device, FIFO, socket or folder would replace it (/dev/null, say) or fail
  // only after everything is written.
  std::error_code error;
  const auto status = fs::status(path, error);
  if (!fs::exists(status) || fs::is_regular_file(status)) return "";
  return std::string("exists and is not a regular file") +
         (fs::is_directory(status) ? " (a folder)" : "");
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  const fs::path target(path_);
  std::error_code error;
  if (const std::string problem = replace_problem(path_); !problem.empty()) {
    throw std::runtime_error("cannot write '" + path_ + "': it " + problem);
  }
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), error);
  if (error) {
    throw std::runtime_error("cannot create the folder of '" + path_ + "': " + error.message());
  }
  remove_stale_temporaries(target.parent_path().string(), target.filename().string());
  // NAME.XXXXXX.tmp: mkstemps creates it with O_EXCL (a planted link makes it pick another
  // name, never write through the link), and the lock marks it as in use until it is closed.
  std::vector<char> name(path_.begin(), path_.end());
  const std::string pattern = ".XXXXXX.tmp";
  name.insert(name.end(), pattern.begin(), pattern.end());
  name.push_back('\0');
  fd_ = ::mkstemps(name.data(), /*suffixlen=*/4);
  if (fd_ < 0) throw io_error("cannot create a temporary file for", path_);
  ::fcntl(fd_, F_SETFD, FD_CLOEXEC);
  ::flock(fd_, LOCK_EX);
  ::fchmod(fd_, 0644);
  temp_ = name.data();
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_.empty()) ::unlink(temp_.c_str());
}

void AtomicFile::write(const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd_, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw io_error("writing a new version of", path_);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0) throw io_error("flushing a new version of", path_);
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw io_error("closing a new version of", path_);
  }
  fd_ = -1;
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    throw io_error("cannot rename '" + temp_ + "' to", path_);
  }
  committed_ = true;
  sync_folder(fs::path(path_).parent_path());
}

void write_file_atomically(const std::string& path, const std::string& text) {
  AtomicFile file(path);
  file.write(text.data(), text.size());
  file.commit();
}

void copy_file_atomically(const std::string& from, const std::string& to) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) throw io_error("cannot read", from);
  try {
    AtomicFile file(to);
    std::vector<char> buffer(1 << 20);
    for (;;) {
      const ssize_t n = ::read(in, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw io_error("reading", from);
      if (n == 0) break;
      file.write(buffer.data(), static_cast<size_t>(n));
    }
    file.commit();
  } catch (...) {
    ::close(in);
    throw;
  }
  ::close(in);
}

}  // namespace alexnet::runtime
