// Reads the metadata_props that dino-export writes into an ONNX file, without protobuf.
//
// An ONNX file is one serialized ModelProto; metadata_props is its field 14, a repeated
// StringStringEntryProto {key = 1, value = 2}. Walking the top-level fields and skipping the
// others (the graph, field 7, is skipped in one jump) is all this needs.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace dino {

class ProtoReader {
 public:
  ProtoReader(const uint8_t* begin, const uint8_t* end) : p_(begin), end_(end) {}
  bool done() const { return p_ >= end_; }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) throw std::runtime_error("truncated ONNX file");
      uint8_t byte = *p_++;
      value |= uint64_t(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return value;
    }
    throw std::runtime_error("bad varint in ONNX file");
  }

  // Returns the payload of a length-delimited field, or skips any other wire type.
  std::string field(uint32_t wire_type) {
    switch (wire_type) {
      case 0: varint(); return {};
      case 1: advance(8); return {};
      case 5: advance(4); return {};
      case 2: {
        uint64_t n = varint();
        const uint8_t* start = p_;
        advance(n);
        return std::string(reinterpret_cast<const char*>(start), n);
      }
      default: throw std::runtime_error("unsupported protobuf wire type in ONNX file");
    }
  }

 private:
  void advance(uint64_t n) {
    if (n > uint64_t(end_ - p_)) throw std::runtime_error("truncated ONNX file");
    p_ += n;
  }
  const uint8_t* p_;
  const uint8_t* end_;
};

// key -> raw value (JSON text for dino.* keys)
inline std::map<std::string, std::string> read_metadata_props(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(path + ": cannot open");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::map<std::string, std::string> props;
  ProtoReader model(bytes.data(), bytes.data() + bytes.size());
  while (!model.done()) {
    uint64_t tag = model.varint();
    std::string payload = model.field(tag & 7);
    if ((tag >> 3) != 14) continue;
    ProtoReader entry(reinterpret_cast<const uint8_t*>(payload.data()),
                      reinterpret_cast<const uint8_t*>(payload.data()) + payload.size());
    std::string key, value;
    while (!entry.done()) {
      uint64_t t = entry.varint();
      std::string s = entry.field(t & 7);
      if ((t >> 3) == 1) key = s;
      if ((t >> 3) == 2) value = s;
    }
    props[key] = value;
  }
  return props;
}

// The few JSON shapes dino-export writes: numbers, "strings", [number, ...].
inline std::vector<double> json_numbers(const std::string& text) {
  std::vector<double> out;
  const char* s = text.c_str();
  while (*s) {
    char* next = nullptr;
    double v = std::strtod(s, &next);
    if (next != s) { out.push_back(v); s = next; } else { ++s; }
  }
  return out;
}

inline std::string json_string(const std::string& text) {
  size_t a = text.find('"'), b = text.rfind('"');
  return (a == std::string::npos || b <= a) ? text : text.substr(a + 1, b - a - 1);
}

// What the program needs from dino_runtime.metadata.ModelMetadata.
struct ModelInfo {
  std::string arch, input_name, input_format;
  int patch_size = 0, num_heads = 0, embed_dim = 0, height = 0, width = 0;
  double mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};

  static ModelInfo from_file(const std::string& path) {
    auto props = read_metadata_props(path);
    auto need = [&](const std::string& key) -> const std::string& {
      auto it = props.find("dino." + key);
      if (it == props.end())
        throw std::runtime_error(path + ": not a dino-export model (no dino." + key + " metadata)");
      return it->second;
    };
    ModelInfo m;
    m.arch = json_string(need("arch"));
    m.input_name = json_string(need("input_name"));
    m.input_format = json_string(need("input_format"));
    m.patch_size = int(json_numbers(need("patch_size")).at(0));
    m.num_heads = int(json_numbers(need("num_heads")).at(0));
    m.embed_dim = int(json_numbers(need("embed_dim")).at(0));
    auto size = json_numbers(need("img_size"));
    m.height = int(size.at(0));
    m.width = int(size.at(1));
    auto mean = json_numbers(need("mean")), std = json_numbers(need("std"));
    for (int c = 0; c < 3; ++c) { m.mean[c] = mean.at(c); m.std[c] = std.at(c); }
    return m;
  }
  bool uint8_input() const { return input_format == "uint8_nhwc_bgr"; }
};

}  // namespace dino
