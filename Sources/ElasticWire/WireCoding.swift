/// Appends big-endian fields to a byte array.
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func write(_ value: UInt8) { bytes.append(value) }
    public mutating func write(_ value: Bool) { bytes.append(value ? 1 : 0) }
    public mutating func write(_ value: UInt16) { write(integer: value) }
    public mutating func write(_ value: UInt32) { write(integer: value) }
    public mutating func write(_ value: UInt64) { write(integer: value) }
    public mutating func write(_ value: Int64) { write(integer: value) }
    public mutating func write(_ value: Double) { write(integer: value.bitPattern) }

    public mutating func write<T: FixedWidthInteger>(integerLittleEndian value: T) {
        var little = value.littleEndian
        withUnsafeBytes(of: &little) { bytes.append(contentsOf: $0) }
    }

    /// Raw bytes, no length.
    public mutating func append(raw: UnsafeRawBufferPointer) { bytes.append(contentsOf: raw) }

    /// A byte string: a 32-bit length, then the bytes.
    public mutating func write(bytes value: some Collection<UInt8>) {
        write(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    /// UTF-8 text: a 32-bit length, then the bytes.
    public mutating func write(_ value: String) { write(bytes: Array(value.utf8)) }

    /// A count of items that follow.
    public mutating func write(count: Int) { write(UInt32(count)) }

    public mutating func write<T: FixedWidthInteger>(integer value: T) {
        var big = value.bigEndian
        withUnsafeBytes(of: &big) { bytes.append(contentsOf: $0) }
    }
}

/// Reads big-endian fields from a byte slice; every read checks the bounds and throws a
/// `WireError` instead of trapping.
public struct WireReader: Sendable {
    public let bytes: ArraySlice<UInt8>
    public private(set) var position: Int

    public init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.position = bytes.startIndex
    }

    public init(_ bytes: [UInt8]) { self.init(bytes[...]) }

    public var remaining: Int { bytes.endIndex - position }

    public mutating func read(_: UInt8.Type = UInt8.self) throws(WireError) -> UInt8 {
        try need(1, "a byte")
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func read(_: Bool.Type) throws(WireError) -> Bool {
        let byte: UInt8 = try read()
        guard byte <= 1 else { throw WireError(.invalidValue, "a boolean must be 0 or 1, got \(byte)") }
        return byte == 1
    }

    public mutating func read(_: UInt16.Type) throws(WireError) -> UInt16 { try read(integer: UInt16.self) }
    public mutating func read(_: UInt32.Type) throws(WireError) -> UInt32 { try read(integer: UInt32.self) }
    public mutating func read(_: UInt64.Type) throws(WireError) -> UInt64 { try read(integer: UInt64.self) }
    public mutating func read(_: Int64.Type) throws(WireError) -> Int64 { try read(integer: Int64.self) }
    public mutating func read(_: Double.Type) throws(WireError) -> Double { Double(bitPattern: try read(integer: UInt64.self)) }

    /// A byte string written by `write(bytes:)`, at most `limit` bytes long.
    public mutating func readBytes(limit: Int = .max) throws(WireError) -> [UInt8] {
        let count = Int(try read(UInt32.self))
        guard count <= limit else { throw WireError(.invalidValue, "a field of \(count) bytes exceeds its limit of \(limit)") }
        try need(count, "a field of \(count) bytes")
        defer { position += count }
        return Array(bytes[position..<position + count])
    }

    /// UTF-8 text, at most `limit` bytes; invalid UTF-8 is refused.
    public mutating func readString(limit: Int = 4096) throws(WireError) -> String {
        let raw = try readBytes(limit: limit)
        guard let text = String(validating: raw, as: UTF8.self) else {
            throw WireError(.invalidValue, "text field is not valid UTF-8")
        }
        return text
    }

    /// A count of items that follow, each at least `minimumItemSize` bytes long: a count the
    /// remaining bytes cannot hold is refused before anything is allocated.
    public mutating func readCount(minimumItemSize: Int) throws(WireError) -> Int {
        let count = Int(try read(UInt32.self))
        guard count <= remaining / max(1, minimumItemSize) else {
            throw WireError(.truncated, "a list of \(count) items cannot fit in the \(remaining) bytes left")
        }
        return count
    }

    public mutating func read<T: FixedWidthInteger>(littleEndian _: T.Type) throws(WireError) -> T {
        let size = MemoryLayout<T>.size
        try need(size, "a \(size)-byte integer")
        var value: T = 0
        for i in stride(from: size - 1, through: 0, by: -1) { value = (value << 8) | T(truncatingIfNeeded: bytes[position + i]) }
        position += size
        return value
    }

    /// The next `count` bytes, no length.
    public mutating func readRaw(_ count: Int) throws(WireError) -> ArraySlice<UInt8> {
        try need(count, "\(count) bytes")
        defer { position += count }
        return bytes[position..<position + count]
    }

    /// Throws unless every byte was read.
    public func expectEnd() throws(WireError) {
        guard remaining == 0 else { throw WireError(.trailingBytes, "\(remaining) unexpected bytes after the message") }
    }

    private mutating func need(_ count: Int, _ what: String) throws(WireError) {
        guard count >= 0, remaining >= count else {
            throw WireError(.truncated, "message ends before \(what) (\(remaining) bytes left)")
        }
    }

    public mutating func read<T: FixedWidthInteger>(integer _: T.Type) throws(WireError) -> T {
        let size = MemoryLayout<T>.size
        try need(size, "a \(size)-byte integer")
        var value: T = 0
        for i in 0..<size { value = (value << 8) | T(truncatingIfNeeded: bytes[position + i]) }
        position += size
        return value
    }
}
