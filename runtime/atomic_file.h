// Files that are replaced whole or not at all.
#pragma once

#include <string>

namespace alexnet::runtime {

/// Writes a new version of `path`: the bytes go to a fresh temporary file beside it (created
/// exclusively, never through a symbolic link), which is flushed to disk and renamed over
/// `path`, then the folder is flushed too. On any failure (a full disk, say) the temporary
/// file is removed, the previous `path` stays whole, and std::runtime_error names the file.
/// A `path` that exists and is not a regular file (a device such as /dev/null, a FIFO, a
/// folder, or a symbolic link to one) is refused (replace_problem); a symbolic link to a
/// regular file is replaced by the file. Temporary files of `path` that a killed writer left
/// (no live AtomicFile holds their lock) are removed first.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  /// Removes the temporary file unless commit() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const char* data, size_t size);
  /// Flushes, renames over the target and flushes the folder.
  void commit();
  /// The temporary file: what is written so far can be read there before commit().
  const std::string& temporary_path() const { return temp_; }

 private:
  std::string path_, temp_;
  int fd_ = -1;
  bool committed_ = false;
};

/// Why a file may not be written at `path`: "" when nothing is there or, after symbolic links,
/// a regular file; otherwise "exists and is not a regular file" (with " (a folder)").
std::string replace_problem(const std::string& path);

/// Whether a file name is that of an AtomicFile's temporary file: TARGET.XXXXXX.tmp, where
/// TARGET has an extension ("last.pt.a1B2c3.tmp"; not "notes.tmp").
bool is_atomic_file_temporary(const std::string& name);

/// Removes the AtomicFile temporary files in `folder` ("" for the working folder) that no
/// live AtomicFile holds: those a killed writer left. With `target` (a file name), only the
/// temporary files of that file.
void remove_stale_temporaries(const std::string& folder, const std::string& target = "");

/// Replaces `path` with `text` through an AtomicFile.
void write_file_atomically(const std::string& path, const std::string& text);

/// Replaces `to` with a copy of `from` through an AtomicFile (streamed, not read whole).
void copy_file_atomically(const std::string& from, const std::string& to);

}  // namespace alexnet::runtime
