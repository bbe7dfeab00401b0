// host/cluster/shard_part.hpp — what a shard's output says about itself, so merge can check the set.
//
// A walk part is the single-process JSON Lines with one record in front,
//   {"type":"shard","command":"walk","shard":1,"shards":3,"first":4,"end":8,"snapshots":12,
//    "manifest":"fleet/manifest.jsonl","manifest_sha256":"…","options":{…}}
// (roots and import parts alike: their share of the dumps, "manifest" then
// naming the dumps and "manifest_sha256" hashing their names and sizes),
// and a compact part is the single-process output directory of its
// snapshots plus shard.json holding the same record and the shard's report.
// Both are written in the same atomic step as the rest of the part, so a
// part that exists is whole. Outputs of unsharded runs carry no record and
// stay byte-identical to what they were.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "cluster/shard.hpp"

namespace ptwalk {

struct shard_part {
  std::string command;       // "walk", "roots", "import", "compact" or "archive add"
  shard_plan plan;
  nlohmann::json options;    // what changes the output's bytes (walk: va_range; compact: policy;
                             // roots, import: how dumps are read and discovered)

  [[nodiscard]] nlohmann::ordered_json to_json() const;
  // Throws input_error("WHERE: not a shard part: ...") when `record` is not one.
  [[nodiscard]] static shard_part from_json(const nlohmann::json& record, const std::string& where);
};

// The name of the record's file inside a compact part directory.
inline constexpr std::string_view shard_record_file = "shard.json";

}  // namespace ptwalk
