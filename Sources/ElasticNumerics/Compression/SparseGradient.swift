#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The k selected elements of a tensor's gradient: strictly ascending indices below `count`
/// and their float32 values. What a top-k replica contributes to the all-gather.
/// Equality is bitwise on the values (like `NamedTensor`).
public struct SparseGradient: Sendable, Equatable {
    /// Elements of the dense tensor.
    public let count: Int
    /// Strictly ascending, each below `count`.
    public let indices: [UInt32]
    /// `values[i]` belongs at `indices[i]`.
    public let values: [Float]

    /// The largest tensor a sparse gradient can index (UInt32 indices).
    public static let maximumCount = Int(UInt32.max)

    /// Throws `.malformedPayload` unless the indices are strictly ascending, below `count`, and
    /// as many as the values.
    public init(count: Int, indices: [UInt32], values: [Float]) throws(CompressionError) {
        guard (0...Self.maximumCount).contains(count) else {
            throw CompressionError(.malformedPayload, "a sparse gradient indexes 0 to \(Self.maximumCount) elements, not \(count)")
        }
        guard indices.count == values.count else {
            throw CompressionError(.malformedPayload, "\(indices.count) indices but \(values.count) values")
        }
        var previous = -1
        for (position, index) in indices.enumerated() {
            guard Int(index) > previous, Int(index) < count else {
                throw CompressionError(.malformedPayload, "index \(index) at position \(position) is not ascending below \(count)")
            }
            previous = Int(index)
        }
        self.init(unchecked: count, indices: indices, values: values)
    }

    init(unchecked count: Int, indices: [UInt32], values: [Float]) {
        self.count = count
        self.indices = indices
        self.values = values
    }

    public static func == (lhs: SparseGradient, rhs: SparseGradient) -> Bool {
        lhs.count == rhs.count && lhs.indices == rhs.indices && bitwiseEqual(lhs.values, rhs.values)
    }

    /// Adds the values into `dense` (`count` floats) at their indices, in float32.
    public func add(into dense: UnsafeMutableBufferPointer<Float>) {
        precondition(dense.count == count, "a sparse gradient of \(count) elements added into \(dense.count)")
        guard let base = dense.baseAddress else { return }
        indices.withUnsafeBufferPointer { indices in
            values.withUnsafeBufferPointer { values in
                for i in 0..<indices.count { base[Int(indices[i])] += values[i] }
            }
        }
    }

    /// Adds the values into `dense` (`count` floats) at their indices, in float32.
    public func add(into dense: inout [Float]) {
        dense.withUnsafeMutableBufferPointer { add(into: $0) }
    }

    /// The dense tensor: zeros except at `indices`.
    public func densified() -> [Float] {
        var dense = [Float](repeating: 0, count: count)
        add(into: &dense)
        return dense
    }

    /// The sum of the replicas' sparse gradients, added in the order given (replica order):
    /// every replica that sums the same list gets bit-identical floats.
    public static func sum(_ parts: [SparseGradient], count: Int) -> [Float] {
        precondition(parts.allSatisfy { $0.count == count }, "sparse gradients of different sizes")
        var dense = [Float](repeating: 0, count: count)
        dense.withUnsafeMutableBufferPointer { buffer in
            for part in parts { part.add(into: buffer) }
        }
        return dense
    }

    // MARK: Wire format

    /// Index encodings on the wire.
    public enum IndexFormat: UInt8, Sendable {
        /// LEB128 varints of the gaps: the first index, then indexᵢ − indexᵢ₋₁ − 1.
        case gaps = 1
        /// A bitmap of ⌈count/8⌉ bytes, bit i%8 of byte i/8 set for each index (LSB first).
        case bitmap = 2
    }

    /// The wire form: format byte, varint count, varint k, the indices (gap varints or a
    /// bitmap, whichever is smaller; gaps on a tie), then k float32 values (little-endian).
    /// Canonical: decoding and re-encoding gives the same bytes.
    public func encoded() -> [UInt8] {
        let (format, indexBytes) = indexEncoding()
        let size = 1 + varintSize(UInt64(count)) + varintSize(UInt64(indices.count)) + indexBytes + 4 * values.count
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            let out = buffer.baseAddress!
            var at = 0
            out[at] = format.rawValue
            at += 1
            putVarint(UInt64(count), out, &at)
            putVarint(UInt64(indices.count), out, &at)
            indices.withUnsafeBufferPointer { indices in
                switch format {
                case .gaps:
                    var next: UInt32 = 0
                    for index in indices {
                        putVarint(UInt64(index - next), out, &at)
                        next = index &+ 1
                    }
                case .bitmap:
                    let bitmap = out + at
                    bitmap.update(repeating: 0, count: indexBytes)
                    for index in indices { bitmap[Int(index >> 3)] |= 1 << (index & 7) }
                    at += indexBytes
                }
            }
            values.withUnsafeBufferPointer { values in
                let raw = UnsafeMutableRawPointer(out + at)
                for i in 0..<values.count { raw.storeBytes(of: values[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            }
            at += 4 * values.count
            precondition(at == size, "sparse encoding wrote \(at) bytes, planned \(size)")
            initialized = size
        }
    }

    /// Bytes of `encoded()`.
    public var encodedSize: Int {
        1 + varintSize(UInt64(count)) + varintSize(UInt64(indices.count)) + indexEncoding().bytes + 4 * values.count
    }

    /// The smaller index encoding and its size.
    private func indexEncoding() -> (format: IndexFormat, bytes: Int) {
        let bitmapBytes = (count + 7) / 8
        var gapBytes = 0
        var next: UInt32 = 0
        for index in indices {
            gapBytes += varintSize(UInt64(index - next))
            next = index &+ 1
            if gapBytes > bitmapBytes { return (.bitmap, bitmapBytes) }
        }
        return (.gaps, gapBytes)
    }

    /// Decodes `encoded()` bytes for a tensor of `count` elements; with `nonzeros`, also
    /// requires exactly that many entries (the k both sides compute). Throws
    /// `.malformedPayload` on an unknown format, a different count, truncated or overlong
    /// varints, indices out of bounds or not ascending, set bitmap padding, a wrong number of
    /// value bytes, or trailing bytes.
    public init(decoding bytes: UnsafeRawBufferPointer, count: Int, nonzeros: Int? = nil) throws(CompressionError) {
        var reader = ByteReader(bytes)
        guard let formatByte = reader.byte(), let format = IndexFormat(rawValue: formatByte) else {
            throw CompressionError(.malformedPayload, bytes.isEmpty ? "empty sparse gradient" : "unknown sparse index format \(bytes[0])")
        }
        let encodedCount = try reader.varint("element count")
        guard encodedCount == UInt64(count) else {
            throw CompressionError(.malformedPayload, "sparse gradient of a \(encodedCount)-element tensor; this tensor has \(count)")
        }
        let k = try reader.varint("entry count")
        guard k <= UInt64(count) else {
            throw CompressionError(.malformedPayload, "\(k) entries in a tensor of \(count) elements")
        }
        if let nonzeros, k != UInt64(nonzeros) {
            throw CompressionError(.malformedPayload, "\(k) entries; top-k of this tensor sends \(nonzeros)")
        }
        let entries = Int(k)
        // Every entry needs at least 4 value bytes: check before allocating.
        guard reader.remaining >= 4 * entries else {
            throw CompressionError(.malformedPayload, "\(entries) entries need at least \(4 * entries) more bytes, \(reader.remaining) left")
        }
        var indices = [UInt32]()
        indices.reserveCapacity(entries)
        switch format {
        case .gaps:
            var next: UInt64 = 0
            for position in 0..<entries {
                let index = next + (try reader.varint("index gap"))
                guard index < UInt64(count) else {
                    throw CompressionError(.malformedPayload, "index \(index) at position \(position) is outside a tensor of \(count)")
                }
                indices.append(UInt32(index))
                next = index + 1
            }
        case .bitmap:
            let bitmapBytes = (count + 7) / 8
            guard let bitmap = reader.bytes(bitmapBytes) else {
                throw CompressionError(.malformedPayload, "truncated index bitmap: \(bitmapBytes) bytes needed")
            }
            if count % 8 != 0, bitmap[bitmapBytes - 1] >> (count % 8) != 0 {
                throw CompressionError(.malformedPayload, "index bitmap sets bits beyond element \(count)")
            }
            for byte in 0..<bitmapBytes {
                var bits = bitmap[byte]
                while bits != 0 {
                    let bit = bits.trailingZeroBitCount
                    guard indices.count < entries else {
                        throw CompressionError(.malformedPayload, "index bitmap holds more than the \(entries) entries announced")
                    }
                    indices.append(UInt32(byte * 8 + bit))
                    bits &= bits - 1
                }
            }
            guard indices.count == entries else {
                throw CompressionError(.malformedPayload, "index bitmap holds \(indices.count) entries, \(entries) announced")
            }
        }
        guard reader.remaining == 4 * entries, let valueBytes = reader.bytes(4 * entries) else {
            throw CompressionError(.malformedPayload, "\(entries) values take \(4 * entries) bytes, \(reader.remaining) left")
        }
        let values = [Float](unsafeUninitializedCapacity: entries) { buffer, initialized in
            for i in 0..<entries {
                buffer[i] = Float(bitPattern: UInt32(littleEndian: valueBytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
            }
            initialized = entries
        }
        self.init(unchecked: count, indices: indices, values: values)
    }

    /// Decodes `encoded()` bytes (see `init(decoding:count:nonzeros:)`).
    public init(decoding bytes: [UInt8], count: Int, nonzeros: Int? = nil) throws(CompressionError) {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(CompressionError) in try SparseGradient(decoding: raw, count: count, nonzeros: nonzeros) }
        }
        self = try result.get()
    }

    /// The expected `encodedSize` of k entries at random positions among `count` elements
    /// (traffic estimates; the real size depends on where the entries fall). Gaps are then
    /// about geometric with mean μ = count/k, so a gap varint takes 1 + Σⱼ exp(−128ʲ/μ) bytes
    /// on average.
    public static func estimatedEncodedSize(count: Int, nonzeros k: Int) -> Int {
        guard k > 0 else { return 1 + varintSize(UInt64(count)) + 1 }
        let mean = Double(count) / Double(k)
        var bytesPerGap = 1.0
        for j in 1...4 { bytesPerGap += exp(-pow(128, Double(j)) / mean) }
        let indexBytes = min((count + 7) / 8, Int((Double(k) * bytesPerGap).rounded()))
        return 1 + varintSize(UInt64(count)) + varintSize(UInt64(k)) + indexBytes + 4 * k
    }
}

// MARK: LEB128

@inline(__always)
func varintSize(_ value: UInt64) -> Int {
    max(1, (64 - value.leadingZeroBitCount + 6) / 7)
}

@inline(__always)
func putVarint(_ value: UInt64, _ out: UnsafeMutablePointer<UInt8>, _ at: inout Int) {
    var value = value
    while value >= 0x80 {
        out[at] = UInt8(truncatingIfNeeded: value) | 0x80
        value >>= 7
        at += 1
    }
    out[at] = UInt8(value)
    at += 1
}

/// Bounds-checked reading of a received payload.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func byte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func bytes(_ count: Int) -> UnsafeRawBufferPointer? {
        guard count >= 0, count <= remaining else { return nil }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    }

    /// A canonical LEB128 varint of at most 32 value bits (no overlong forms).
    mutating func varint(_ what: String) throws(CompressionError) -> UInt64 {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 35, by: 7) {
            guard let byte = byte() else {
                throw CompressionError(.malformedPayload, "truncated varint (\(what)) at byte \(offset)")
            }
            value |= UInt64(byte & 0x7F) << UInt64(shift)
            if byte & 0x80 == 0 {
                guard byte != 0 || shift == 0 else {
                    throw CompressionError(.malformedPayload, "overlong varint (\(what)) ending at byte \(offset - 1)")
                }
                guard value <= UInt64(UInt32.max) else {
                    throw CompressionError(.malformedPayload, "varint (\(what)) \(value) exceeds 32 bits")
                }
                return value
            }
        }
        throw CompressionError(.malformedPayload, "varint (\(what)) longer than 5 bytes at byte \(offset)")
    }
}
