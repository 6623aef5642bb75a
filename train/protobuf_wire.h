// The protocol-buffer wire format, written and read by hand: enough of it for the ONNX files
// of train/onnx_export.h without a protobuf library.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace alexnet::train::protobuf {

/// Wire types of the protocol-buffer encoding.
enum class WireType : int { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

/// Appends fields of one message, in wire format, to a byte string. Repeated fields are
/// written one field per element (proto2's unpacked form, which every parser reads).
class MessageWriter {
 public:
  /// An integer field (int32, int64, uint64, enum, bool). Negative values take ten bytes,
  /// as int64's two's complement.
  MessageWriter& integer(int field, int64_t value);
  /// A float field (four bytes, little-endian).
  MessageWriter& float32(int field, float value);
  /// A string or bytes field.
  MessageWriter& bytes(int field, std::string_view value);
  /// A nested message field.
  MessageWriter& message(int field, const MessageWriter& nested);
  /// The fields of `other` after these (two encoded messages concatenated are their merge).
  MessageWriter& append(const MessageWriter& other);

  /// The encoded message.
  const std::string& data() const { return data_; }

 private:
  void tag(int field, WireType type);
  void varint(uint64_t value);

  std::string data_;
};

/// One field read from a message.
struct Field {
  int number = 0;
  WireType type = WireType::kVarint;
  /// The value of a varint field; the raw bits of a fixed32 or fixed64 field.
  uint64_t integer = 0;
  /// The payload of a length-delimited field (a view into the message being read).
  std::string_view bytes;
};

/// Reads the fields of one encoded message in order. Errors name `what` (e.g. the file).
class MessageReader {
 public:
  MessageReader(std::string_view data, std::string what);

  /// Reads the next field into `field`; false at the end of the message. Throws
  /// std::runtime_error naming `what` on a truncated field, an over-long varint or an
  /// unknown wire type.
  bool next(Field& field);

 private:
  uint64_t varint();
  [[noreturn]] void fail(const std::string& problem) const;

  std::string_view data_;
  size_t position_ = 0;
  std::string what_;
};

}  // namespace alexnet::train::protobuf
