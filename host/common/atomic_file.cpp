// host/common/atomic_file.cpp — temporary-then-rename outputs, and outputs written through.
#include "common/atomic_file.hpp"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "input/memory_image.hpp"

namespace ptwalk {

namespace detail {

fd_streambuf::fd_streambuf() : buffer_(std::size_t{1} << 16) { setp(buffer_.data(), buffer_.data() + buffer_.size()); }

bool fd_streambuf::write_all(const char* data, std::size_t size) {
  while (size > 0 && error_ == 0) {
    const ssize_t n = ::write(fd_, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) error_ = n < 0 ? errno : EIO;
    else data += n, size -= static_cast<std::size_t>(n);
  }
  return error_ == 0;
}

bool fd_streambuf::drain() {
  const bool ok = write_all(pbase(), static_cast<std::size_t>(pptr() - pbase()));
  setp(buffer_.data(), buffer_.data() + buffer_.size());
  return ok;
}

fd_streambuf::int_type fd_streambuf::overflow(int_type ch) {
  if (!drain()) return traits_type::eof();
  if (!traits_type::eq_int_type(ch, traits_type::eof())) {
    *pptr() = traits_type::to_char_type(ch);
    pbump(1);
  }
  return traits_type::not_eof(ch);
}

int fd_streambuf::sync() { return drain() ? 0 : -1; }

std::streamsize fd_streambuf::xsputn(const char* data, std::streamsize size) {
  // Large writes skip the buffer (the walk writes 1 MiB chunks).
  if (size >= static_cast<std::streamsize>(buffer_.size())) {
    if (!drain() || !write_all(data, static_cast<std::size_t>(size))) return 0;
    return size;
  }
  return std::streambuf::xsputn(data, size);
}

}  // namespace detail

namespace {

std::filesystem::path temporary_beside(const std::filesystem::path& target) {
  return target.parent_path() / fmt::format(".{}.tmp-{}", target.filename().string(), ::getpid());
}

// A connected stream socket to the Unix socket at `path`, or -1 with errno set.
int connect_unix_socket(const std::filesystem::path& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.native().size() >= sizeof address.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  std::memcpy(address.sun_path, path.c_str(), path.native().size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    const int error = errno;
    ::close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

}  // namespace

atomic_output_file::atomic_output_file(std::filesystem::path target)
    : target_(std::move(target)), shown_(target_.string()), stream_(&buffer_) {
  if (target_ == "-") {
    shown_ = "stdout";
    fd_ = STDOUT_FILENO;
    owns_fd_ = false;
  } else if (struct stat st {}; ::stat(target_.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    // Not a file to replace: write to it as it is.
    if (S_ISDIR(st.st_mode)) throw input_error(fmt::format("{}: is a directory", shown_));
    fd_ = S_ISSOCK(st.st_mode) ? connect_unix_socket(target_) : ::open(target_.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0) throw input_error(fmt::format("{}: cannot open for writing: {}", shown_, std::strerror(errno)));
  } else {
    // A symbolic link to a file stays a link: the file it names is replaced.
    std::error_code ec;
    if (std::filesystem::is_symlink(target_, ec)) target_ = std::filesystem::canonical(target_, ec);
    remove_stale_temporaries(target_);
    temporary_ = temporary_beside(target_);
    ::unlink(temporary_.c_str());  // left by an earlier, killed run that had this pid
    registration_.emplace(temporary_, false);
    fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0) throw input_error(fmt::format("{}: cannot create output file: {}", shown_, std::strerror(errno)));
  }
  buffer_.attach(fd_);
}

atomic_output_file::~atomic_output_file() {
  if (fd_ >= 0 && owns_fd_) ::close(fd_);
  if (!committed_ && !temporary_.empty()) ::unlink(temporary_.c_str());
}

void atomic_output_file::fail(std::string_view what, int error) const {
  throw input_error(fmt::format("{}: {}: {}", shown_, what, std::strerror(error)));
}

void atomic_output_file::commit() {
  stream_.flush();
  if (buffer_.error() != 0) fail("write failed", buffer_.error());
  if (!stream_) fail("write failed", EIO);
  if (owns_fd_) {
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0 && errno != EINTR) fail("write failed", errno);
  }
  if (!temporary_.empty() && ::rename(temporary_.c_str(), target_.c_str()) != 0)
    fail("cannot rename output into place", errno);
  committed_ = true;
  registration_.reset();
}

namespace {

// "out/" and "out" name the same directory; the temporary goes beside it.
std::filesystem::path directory_target(const std::filesystem::path& target) {
  std::filesystem::path out = std::filesystem::absolute(target).lexically_normal();
  return out.has_filename() ? out : out.parent_path();
}

}  // namespace

atomic_output_dir::atomic_output_dir(std::filesystem::path target)
    : target_(directory_target(target)), temporary_(temporary_beside(target_)) {
  std::error_code ec;
  remove_stale_temporaries(target_);
  std::filesystem::remove_all(temporary_, ec);  // left by an earlier, killed run of this pid
  // `--out a/b/fleet` may name a directory whose parents do not exist yet.
  std::filesystem::create_directories(target_.parent_path(), ec);
  registration_.emplace(temporary_, true);
  if (!std::filesystem::create_directory(temporary_, ec))
    throw input_error(fmt::format("{}: cannot create output directory: {}", target_.string(),
                                  ec ? ec.message() : "exists"));
}

atomic_output_dir::~atomic_output_dir() {
  if (!committed_) {
    std::error_code ignored;
    std::filesystem::remove_all(temporary_, ignored);
  }
}

std::filesystem::path atomic_output_dir::final_path(const std::filesystem::path& staged) const {
  return target_ / staged.lexically_relative(temporary_);
}

void atomic_output_dir::commit() {
  std::error_code ec;
  if (std::filesystem::exists(target_, ec)) {
    if (!std::filesystem::is_directory(target_, ec))
      throw input_error(fmt::format("{}: exists and is not a directory", target_.string()));
    if (::renameat2(AT_FDCWD, temporary_.c_str(), AT_FDCWD, target_.c_str(), RENAME_EXCHANGE) == 0) {
      committed_ = true;
      std::filesystem::remove_all(temporary_, ec);  // now the old directory
      registration_.reset();
      return;
    }
    if (errno != EINVAL && errno != ENOSYS)
      throw input_error(fmt::format("{}: cannot swap the new directory into place: {}", target_.string(),
                                    std::strerror(errno)));
    // A file system without RENAME_EXCHANGE: move the old one aside first,
    // and back if the new one cannot take its place.
    const std::filesystem::path old = temporary_.string() + ".old";
    std::filesystem::rename(target_, old, ec);
    if (!ec) {
      std::filesystem::rename(temporary_, target_, ec);
      std::error_code ignored;
      if (ec) std::filesystem::rename(old, target_, ignored);
      else std::filesystem::remove_all(old, ignored);
    }
    if (ec) throw input_error(fmt::format("{}: cannot move the new directory into place: {}", target_.string(), ec.message()));
  } else {
    std::filesystem::rename(temporary_, target_, ec);
    if (ec) throw input_error(fmt::format("{}: cannot move the new directory into place: {}", target_.string(), ec.message()));
  }
  committed_ = true;
  registration_.reset();
}

void remove_stale_temporaries(const std::filesystem::path& target) {
  const std::string prefix = fmt::format(".{}.tmp-", target.filename().string());
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : ".";
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with(prefix)) continue;
    // Exactly the prefix and a pid: `.old` (a replaced directory mid-swap) is not ours to remove.
    const char* digits = name.c_str() + prefix.size();
    const char* digits_end = name.c_str() + name.size();
    pid_t pid = 0;
    const auto [stop, error] = std::from_chars(digits, digits_end, pid);
    if (error != std::errc{} || stop != digits_end || pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to ask): leave it
    std::error_code ignored;
    std::filesystem::remove_all(it->path(), ignored);
  }
}

void check_output_dir(const std::filesystem::path& dir, bool replace) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return;
  if (!std::filesystem::is_directory(dir, ec))
    throw input_error(fmt::format("{}: exists and is not a directory", dir.string()));
  if (!replace && !std::filesystem::is_empty(dir, ec))
    throw input_error(fmt::format("{}: exists and is not empty (use --force to replace it)", dir.string()));
}

}  // namespace ptwalk
