#include "train/protobuf_wire.h"

#include <cstring>
#include <stdexcept>

namespace alexnet::train::protobuf {

void MessageWriter::varint(uint64_t value) {
  while (value >= 0x80) {
    data_.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  data_.push_back(static_cast<char>(value));
}

void MessageWriter::tag(int field, WireType type) {
  varint((static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(type));
}

MessageWriter& MessageWriter::integer(int field, int64_t value) {
  tag(field, WireType::kVarint);
  varint(static_cast<uint64_t>(value));
  return *this;
}

MessageWriter& MessageWriter::float32(int field, float value) {
  tag(field, WireType::kFixed32);
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  for (int byte = 0; byte < 4; ++byte) data_.push_back(static_cast<char>(bits >> (8 * byte)));
  return *this;
}

MessageWriter& MessageWriter::bytes(int field, std::string_view value) {
  tag(field, WireType::kLengthDelimited);
  varint(value.size());
  data_.append(value.data(), value.size());
  return *this;
}

MessageWriter& MessageWriter::message(int field, const MessageWriter& nested) {
  return bytes(field, nested.data());
}

MessageWriter& MessageWriter::append(const MessageWriter& other) {
  data_ += other.data_;
  return *this;
}

MessageReader::MessageReader(std::string_view data, std::string what)
    : data_(data), what_(std::move(what)) {}

void MessageReader::fail(const std::string& problem) const {
  throw std::runtime_error(what_ + ": not a valid protocol-buffer message (" + problem +
                           " at byte " + std::to_string(position_) + ")");
}

uint64_t MessageReader::varint() {
  uint64_t value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (position_ >= data_.size()) fail("truncated varint");
    const auto byte = static_cast<uint8_t>(data_[position_++]);
    value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return value;
  }
  fail("varint longer than ten bytes");
}

bool MessageReader::next(Field& field) {
  if (position_ >= data_.size()) return false;
  const uint64_t key = varint();
  field.number = static_cast<int>(key >> 3);
  field.bytes = {};
  field.integer = 0;
  if (field.number == 0) fail("field number 0");
  auto take = [&](size_t size) {
    if (size > data_.size() - position_)
      fail("field " + std::to_string(field.number) + " truncated");
    const std::string_view out = data_.substr(position_, size);
    position_ += size;
    return out;
  };
  auto little_endian = [](std::string_view raw) {
    uint64_t value = 0;
    for (size_t i = 0; i < raw.size(); ++i) {
      value |= static_cast<uint64_t>(static_cast<uint8_t>(raw[i])) << (8 * i);
    }
    return value;
  };
  switch (key & 7) {
    case 0:
      field.type = WireType::kVarint;
      field.integer = varint();
      break;
    case 1:
      field.type = WireType::kFixed64;
      field.integer = little_endian(take(8));
      break;
    case 2:
      field.type = WireType::kLengthDelimited;
      field.bytes = take(varint());
      break;
    case 5:
      field.type = WireType::kFixed32;
      field.integer = little_endian(take(4));
      break;
    default:
      fail("wire type " + std::to_string(key & 7) + " of field " + std::to_string(field.number));
  }
  return true;
}

}  // namespace alexnet::train::protobuf
