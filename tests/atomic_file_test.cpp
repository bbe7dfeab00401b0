// tests/atomic_file_test.cpp — outputs: replaced whole, written through, never left half-done.
//
// A regular target is replaced by rename; a device, FIFO or socket is written
// through and keeps its kind; failures name the target and errno; temporaries
// go on error, on a fatal signal, and (stale ones) on the next run; a mapped
// input truncated under a read ends in one line naming it.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/atomic_file.hpp"
#include "common/signal_cleanup.hpp"
#include "input/memory_image.hpp"
#include "support/error_of.hpp"
#include "support/temp_dir.hpp"

namespace ptwalk {
namespace {

using testing::error_of;
using testing::read_text;
using testing::temp_dir;

// Names in `dir` that look like temporaries (".NAME.tmp-PID").
std::vector<std::string> temporaries_in(const std::filesystem::path& dir) {
  std::vector<std::string> found;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().filename().string().find(".tmp-") != std::string::npos)
      found.push_back(entry.path().filename().string());
  return found;
}

void write_and_commit(const std::filesystem::path& target, const std::string& text) {
  atomic_output_file out(target);
  out.stream() << text;
  out.commit();
}

// A pid no process has: a child that has exited and been reaped.
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  return child;
}

TEST(atomic_output_file, replaces_a_regular_file_whole) {
  temp_dir dir;
  const auto target = dir.write("out.jsonl", "old\n");
  {
    atomic_output_file out(target);
    out.stream() << "new\n";
    EXPECT_EQ(read_text(target), "old\n");  // untouched until commit
    out.commit();
  }
  EXPECT_EQ(read_text(target), "new\n");
  EXPECT_TRUE(temporaries_in(dir.path()).empty());
}

TEST(atomic_output_file, uncommitted_output_leaves_the_target_and_no_temporary) {
  temp_dir dir;
  const auto target = dir.write("out.jsonl", "old\n");
  {
    atomic_output_file out(target);
    out.stream() << "half";
    EXPECT_EQ(temporaries_in(dir.path()).size(), 1u);
  }
  EXPECT_EQ(read_text(target), "old\n");
  EXPECT_TRUE(temporaries_in(dir.path()).empty());
}

TEST(atomic_output_file, a_symbolic_link_stays_a_link) {
  temp_dir dir;
  const auto file = dir.write("real.jsonl", "old\n");
  std::filesystem::create_symlink(file, dir / "link.jsonl");
  write_and_commit(dir / "link.jsonl", "new\n");
  EXPECT_TRUE(std::filesystem::is_symlink(dir / "link.jsonl"));
  EXPECT_EQ(read_text(file), "new\n");
}

TEST(atomic_output_file, a_character_device_is_written_through_and_stays_one) {
  temp_dir dir;
  const auto node = dir / "null";
  if (::mknod(node.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0)
    GTEST_SKIP() << "mknod needs root: " << std::strerror(errno);
  write_and_commit(node, "discarded\n");
  struct stat st {};
  ASSERT_EQ(::stat(node.c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(1, 3));
  EXPECT_TRUE(temporaries_in(dir.path()).empty());
}

TEST(atomic_output_file, a_fifo_is_written_through_to_its_reader) {
  temp_dir dir;
  const auto fifo = dir / "pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto reader = std::async(std::launch::async, [&] { return read_text(fifo); });
  write_and_commit(fifo, "through the pipe\n");
  EXPECT_EQ(reader.get(), "through the pipe\n");
  EXPECT_TRUE(std::filesystem::is_fifo(fifo));
}

TEST(atomic_output_file, a_unix_socket_is_connected_and_written_to) {
  temp_dir dir;
  const auto path = dir / "sock";
  const int listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  auto reader = std::async(std::launch::async, [&] {
    const int peer = ::accept(listener, nullptr, nullptr);
    std::string text;
    char buffer[256];
    for (ssize_t n; (n = ::read(peer, buffer, sizeof buffer)) > 0;) text.append(buffer, static_cast<std::size_t>(n));
    ::close(peer);
    return text;
  });
  write_and_commit(path, "over the socket\n");
  EXPECT_EQ(reader.get(), "over the socket\n");
  ::close(listener);
  EXPECT_TRUE(std::filesystem::is_socket(path));
}

TEST(atomic_output_file, a_directory_target_is_refused) {
  temp_dir dir;
  EXPECT_EQ(error_of([&] { atomic_output_file out(dir.path()); }), dir.path().string() + ": is a directory");
}

TEST(atomic_output_file, a_full_device_fails_with_the_target_and_errno) {
  EXPECT_EQ(error_of([] { write_and_commit("/dev/full", std::string(100000, 'x')); }),
            "/dev/full: write failed: No space left on device");
}

TEST(atomic_output_file, stale_temporaries_of_the_target_go_live_ones_stay) {
  temp_dir dir;
  const auto stale = dir.write(fmt::format(".out.jsonl.tmp-{}", dead_pid()), "stale");
  const auto live = dir.write(fmt::format(".out.jsonl.tmp-{}", ::getppid()), "another run's");
  const auto other_target = dir.write(fmt::format(".other.tmp-{}", dead_pid()), "not ours");
  const auto moved_aside = dir.write(fmt::format(".out.jsonl.tmp-{}.old", dead_pid()), "a swap's old copy");
  write_and_commit(dir / "out.jsonl", "new\n");
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_TRUE(std::filesystem::exists(other_target));
  EXPECT_TRUE(std::filesystem::exists(moved_aside));
}

TEST(atomic_output_dir, final_path_names_where_a_staged_file_will_be) {
  temp_dir dir;
  atomic_output_dir staging(dir / "fleet");
  EXPECT_EQ(staging.final_path(staging.path() / "a.img"), dir / "fleet" / "a.img");
}

TEST(atomic_output_dir, stale_staging_directories_go) {
  temp_dir dir;
  const auto stale = dir / fmt::format(".fleet.tmp-{}", dead_pid());
  std::filesystem::create_directories(stale / "sub");
  std::ofstream(stale / "sub" / "x.img") << "x";
  atomic_output_dir staging(dir / "fleet");
  EXPECT_FALSE(std::filesystem::exists(stale));
}

// The handler is installed in the death test's child only.
TEST(signal_cleanup_death, a_termination_signal_removes_registered_temporaries) {
  temp_dir dir;
  const auto target = dir / "fleet";
  EXPECT_EXIT(
      {
        install_signal_cleanup();
        atomic_output_dir staging(target);
        std::filesystem::create_directories(staging.path() / "nested");
        std::ofstream(staging.path() / "a.img") << "data";
        std::ofstream(staging.path() / "nested" / "b.img") << "data";
        atomic_output_file report(dir / "report.json");
        report.stream() << "partial";
        ::raise(SIGTERM);
      },
      ::testing::KilledBySignal(SIGTERM), "");
  EXPECT_TRUE(temporaries_in(dir.path()).empty());
  EXPECT_FALSE(std::filesystem::exists(target));
  EXPECT_FALSE(std::filesystem::exists(dir / "report.json"));
}

TEST(signal_cleanup_death, a_mapped_input_truncated_under_a_read_names_the_file) {
  temp_dir dir;
  const auto image = dir.write("image.raw", std::string(3 * 4096, 'x'));
  EXPECT_EXIT(
      {
        install_signal_cleanup();
        atomic_output_file out(dir / "walk.jsonl");
        const mapped_file file(image);
        std::filesystem::resize_file(image, 0);
        volatile std::byte sink = file.bytes()[2 * 4096 + 5];
        (void)sink;
      },
      ::testing::ExitedWithCode(1),
      fmt::format("^ptwalk: {}: the file shrank while it was read \\(no data at offset 0x2005\\)\n$", image.string()));
  EXPECT_TRUE(temporaries_in(dir.path()).empty());
}

}  // namespace
}  // namespace ptwalk
