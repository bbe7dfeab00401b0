// host/input/json_path.hpp — where nlohmann's parser is in a line, as a key path.
//
// The manifest parser follows the parser's callback events with this to
// name the key an error is about ("memory.regions[1].gpa"), to refuse a key
// given twice in one object, and to stop at a nesting depth that printing
// or copying the value (both recursive) could not survive.
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace ptwalk {

// Deep enough for any provenance a "meta" object carries.
inline constexpr std::size_t max_json_depth = 100;

class json_path_tracker {
 public:
  using event = nlohmann::json::parse_event_t;

  // Follows one event; false when it opens a level deeper than max_json_depth.
  bool on_event(event e, const nlohmann::json& parsed) {
    switch (e) {
      case event::object_start:
      case event::array_start:
        levels_.push_back({e == event::array_start, 0, {}, {}});
        return levels_.size() <= max_json_depth;
      case event::key:
        levels_.back().key = parsed.get<std::string>();
        return true;
      case event::object_end:
      case event::array_end:
        levels_.pop_back();
        element_done();
        return true;
      case event::value:
        element_done();
        return true;
    }
    return true;
  }

  // Whether the key just read is new in its object (false: a duplicate).
  [[nodiscard]] bool first_time(const std::string& key) { return levels_.back().keys.insert(key).second; }

  // The path to the value being read, e.g. "memory.regions[1].gpa"; past
  // `shown` levels cut off with "…".
  [[nodiscard]] std::string text(std::size_t shown = max_json_depth) const {
    std::string out;
    for (std::size_t i = 0; i < levels_.size(); ++i) {
      if (i == shown) return out + "…";
      const level& l = levels_[i];
      if (l.array) out += fmt::format("[{}]", l.index);
      else if (!l.key.empty()) out += (out.empty() ? "" : ".") + l.key;
    }
    return out;
  }

 private:
  struct level {
    bool array = false;
    std::size_t index = 0;  // in an array: the element being read
    std::string key;        // in an object: the key being read
    std::set<std::string> keys;
  };

  void element_done() {
    if (!levels_.empty() && levels_.back().array) ++levels_.back().index;
  }

  std::vector<level> levels_;
};

}  // namespace ptwalk
