// host/cluster/shard_part.cpp — the shard record: to and from JSON, strictly.
#include "cluster/shard_part.hpp"

#include <fmt/format.h>

#include "input/memory_image.hpp"

namespace ptwalk {

nlohmann::ordered_json shard_part::to_json() const {
  nlohmann::ordered_json j;
  j["type"] = "shard";
  j["command"] = command;
  j["shard"] = plan.shard.index;
  j["shards"] = plan.shard.count;
  j["first"] = plan.first;
  j["end"] = plan.end;
  j["snapshots"] = plan.snapshots;
  j["manifest"] = plan.manifest;
  j["manifest_sha256"] = plan.manifest_sha256;
  j["options"] = options;
  return j;
}

shard_part shard_part::from_json(const nlohmann::json& record, const std::string& where) {
  const auto fail = [&](std::string_view problem) {
    return input_error(fmt::format("{}: not a shard part ({}); write parts with --shard or a launcher's variables",
                                   where, problem));
  };
  if (!record.is_object() || record.value("type", "") != "shard") throw fail("no shard record");
  const auto count = [&](const char* key) {
    if (!record.contains(key) || !record[key].is_number_unsigned()) throw fail(fmt::format("no \"{}\"", key));
    return record[key].get<std::size_t>();
  };
  const auto text = [&](const char* key) {
    if (!record.contains(key) || !record[key].is_string()) throw fail(fmt::format("no \"{}\"", key));
    return record[key].get<std::string>();
  };
  shard_part part;
  part.command = text("command");
  part.plan.shard = {count("shard"), count("shards")};
  part.plan.first = count("first");
  part.plan.end = count("end");
  part.plan.snapshots = count("snapshots");
  part.plan.manifest = text("manifest");
  part.plan.manifest_sha256 = text("manifest_sha256");
  part.options = record.value("options", nlohmann::json());
  if (part.plan.shard.index >= part.plan.shard.count || part.plan.first > part.plan.end ||
      part.plan.end > part.plan.snapshots)
    throw fail("inconsistent shard or range");
  return part;
}

}  // namespace ptwalk
