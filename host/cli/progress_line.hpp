// host/cli/progress_line.hpp — "done/total, rate, ETA" on stderr for long fleet jobs.
//
// On a terminal the line is redrawn in place ten times a second; when stderr
// is not a terminal nothing is shown unless asked for, and then one line a
// second (so logs stay readable).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "compact/compact_job.hpp"

namespace ptwalk::cli {

class progress_line {
 public:
  progress_line(std::string what, bool force)
      : what_(std::move(what)), terminal_(::isatty(STDERR_FILENO) == 1), enabled_(force || terminal_) {}

  // The callback for the job; empty when progress is off.
  [[nodiscard]] progress_callback callback() {
    if (!enabled_) return {};
    return [this](const compact_progress& p) { show(p); };
  }

  // Ends the redrawn line so what follows starts on its own.
  void finish() {
    if (enabled_ && terminal_ && shown_) fmt::print(stderr, "\n");
  }

 private:
  void show(const compact_progress& p) {
    const auto now = std::chrono::steady_clock::now();
    const auto interval = terminal_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(1000);
    if (shown_ && p.done != p.total && now - last_ < interval) return;
    last_ = now;
    shown_ = true;
    const double rate = p.elapsed > 0 ? static_cast<double>(p.done) / p.elapsed : 0;
    const double eta = rate > 0 ? static_cast<double>(p.total - p.done) / rate : 0;
    const std::string line = fmt::format("{}: {}/{} snapshots ({:.0f}%), {:.1f}/s, ETA {:.0f} s", what_, p.done,
                                         p.total, 100.0 * static_cast<double>(p.done) / static_cast<double>(p.total),
                                         rate, eta);
    if (terminal_) fmt::print(stderr, "\r{}\x1b[K", line);
    else fmt::print(stderr, "{}\n", line);
    std::fflush(stderr);
  }

  std::string what_;
  bool terminal_;
  bool enabled_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace ptwalk::cli
