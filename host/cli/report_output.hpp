// host/cli/report_output.hpp — how `compact` and `merge` hand their compact report to the user.
#pragma once

#include <cstdio>
#include <optional>

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "compact/compact_job.hpp"

namespace ptwalk {

// The report as text on stdout, and as JSON into `report_file` when --report
// named one (opened before the job, so an unwritable path failed early).
inline void publish_report(const compact_report& report, std::optional<atomic_output_file>& report_file) {
  fmt::print("{}", report.format());
  std::fflush(stdout);
  if (report_file) {
    report_file->stream() << report.to_json().dump(2) << '\n';
    report_file->commit();
  }
}

}  // namespace ptwalk
