#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The k selected elements of a tensor's gradient: strictly ascending indices below `count`
/// and their values, which cross as float32 or as bfloat16 (`valueFormat`; bf16 values are
/// float32s whose low 16 bits are zero, so the wire form is exact either way). What a top-k
/// replica contributes to the all-gather. Equality is bitwise on the values (like `NamedTensor`).
public struct SparseGradient: Sendable, Equatable {
    /// How the values cross.
    public enum ValueFormat: UInt8, Sendable, Hashable, CaseIterable {
        /// 4 bytes per value.
        case float32 = 0
        /// 2 bytes per value: the upper half of the float32 (see `quantized`).
        case bf16 = 1

        /// Bytes per value on the wire.
        public var bytes: Int { self == .float32 ? 4 : 2 }

        /// The name in a job spec (`compression.values`).
        public var name: String { self == .float32 ? "float32" : "bf16" }

        /// The value `x` crosses as: x itself in float32; in bf16, x rounded to nearest even,
        /// except that a finite x never becomes infinite (it rounds toward zero there instead).
        /// So x − quantized(x) is exact in float32 and finite for finite x: what top-k keeps in
        /// its residual. NaN stays NaN, ±inf stays ±inf, ±0 keeps its sign.
        @inline(__always)
        public func quantized(_ x: Float) -> Float {
            guard self == .bf16 else { return x }
            let rounded = BFloat16.float(BFloat16.bits(x))
            if rounded.isInfinite && x.isFinite { return Float(bitPattern: x.bitPattern & 0xFFFF_0000) }
            return rounded
        }

        /// Whether `x` crosses unchanged.
        @inline(__always)
        public func represents(_ x: Float) -> Bool {
            self == .float32 || x.bitPattern & 0xFFFF == 0
        }
    }

    /// Elements of the dense tensor.
    public let count: Int
    /// Strictly ascending, each below `count`.
    public let indices: [UInt32]
    /// `values[i]` belongs at `indices[i]`.
    public let values: [Float]
    /// How `values` cross (every value is representable in it).
    public let valueFormat: ValueFormat

    /// The largest tensor a sparse gradient can index (UInt32 indices).
    public static let maximumCount = Int(UInt32.max)

    /// Throws `.malformedPayload` unless the indices are strictly ascending, below `count`, and
    /// as many as the values, and every value is representable in `valueFormat` (quantize
    /// them with `ValueFormat.quantized` first).
    public init(count: Int, indices: [UInt32], values: [Float], valueFormat: ValueFormat = .float32) throws(CompressionError) {
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
        if let position = values.firstIndex(where: { !valueFormat.represents($0) }) {
            throw CompressionError(.malformedPayload, "value \(values[position]) at position \(position) is not a \(valueFormat.name) value")
        }
        self.init(unchecked: count, indices: indices, values: values, valueFormat: valueFormat)
    }

    init(unchecked count: Int, indices: [UInt32], values: [Float], valueFormat: ValueFormat) {
        self.count = count
        self.indices = indices
        self.values = values
        self.valueFormat = valueFormat
    }

    public static func == (lhs: SparseGradient, rhs: SparseGradient) -> Bool {
        lhs.count == rhs.count && lhs.valueFormat == rhs.valueFormat && lhs.indices == rhs.indices && bitwiseEqual(lhs.values, rhs.values)
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

    /// Index encodings on the wire. Each is a code of the gaps g₀ = index₀,
    /// gᵢ = indexᵢ − indexᵢ₋₁ − 1, except the bitmap.
    public enum IndexFormat: UInt8, Sendable, CaseIterable {
        /// LEB128 varints of the gaps.
        case gaps = 1
        /// A bitmap of ⌈count/8⌉ bytes, bit i%8 of byte i/8 set for each index (LSB first).
        case bitmap = 2
        /// Golomb–Rice codes of the gaps with parameter b (one byte, 0–31): g >> b in unary
        /// (that many 1 bits, then a 0), then the low b bits of g (least significant first),
        /// packed LSB first into bytes, the last byte padded with zero bits. The near-optimal
        /// code for the geometric gaps of scattered indices: ≈ 8.6 bits per index at 1 %
        /// density, against ≈ 10.2 for the varints.
        case rice = 3
    }

    /// The index encoding `encoded()` uses: the smallest (a tie prefers gaps, then Rice with
    /// the smaller parameter, then the bitmap). Rice parameters tried: ⌊log₂ mean gap⌋ − 2 …
    /// ⌊log₂ mean gap⌋ + 1, which holds the best one for geometric gaps (≈ log₂(mean·ln 2)).
    struct IndexPlan: Equatable {
        var format: IndexFormat
        /// Rice's b (0 otherwise).
        var parameter: Int
        /// Bytes of the index part (Rice: with its parameter byte).
        var bytes: Int
    }

    static func indexPlan(_ indices: UnsafeBufferPointer<UInt32>, count: Int) -> IndexPlan {
        let k = indices.count
        var gapBytes = 0
        var next: UInt32 = 0
        for index in indices {
            gapBytes += varintSize(UInt64(index &- next))
            next = index &+ 1
        }
        var best = IndexPlan(format: .gaps, parameter: 0, bytes: gapBytes)
        if k > 0 {
            let mean = (Int(indices[k - 1]) + 1 - k) / k
            let center = mean == 0 ? 0 : Int.bitWidth - 1 - mean.leadingZeroBitCount
            for b in max(0, center - 2)...min(31, center + 1) {
                var bits = k * (b + 1)
                next = 0
                for index in indices {
                    bits += Int((index &- next) >> UInt32(b))
                    next = index &+ 1
                }
                let bytes = 1 + (bits + 7) / 8
                if bytes < best.bytes { best = IndexPlan(format: .rice, parameter: b, bytes: bytes) }
            }
        }
        let bitmapBytes = (count + 7) / 8
        if bitmapBytes < best.bytes { best = IndexPlan(format: .bitmap, parameter: 0, bytes: bitmapBytes) }
        return best
    }

    private var indexPlan: IndexPlan {
        indices.withUnsafeBufferPointer { Self.indexPlan($0, count: count) }
    }

    /// The wire form: a format byte (index format in the low 4 bits, value format in the high
    /// 4), varint count, varint k, the indices (see `IndexFormat`; the smallest encoding), then
    /// k values, little-endian (float32: 4 bytes; bf16: the upper 2 bytes of the float32).
    /// Canonical: decoding and re-encoding gives the same bytes, and the decoder accepts only
    /// the encoding this would choose.
    public func encoded() -> [UInt8] {
        let plan = indexPlan
        let size = 1 + varintSize(UInt64(count)) + varintSize(UInt64(indices.count)) + plan.bytes + valueFormat.bytes * values.count
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            let out = buffer.baseAddress!
            var at = 0
            out[at] = plan.format.rawValue | valueFormat.rawValue << 4
            at += 1
            putVarint(UInt64(count), out, &at)
            putVarint(UInt64(indices.count), out, &at)
            indices.withUnsafeBufferPointer { indices in
                switch plan.format {
                case .gaps:
                    var next: UInt32 = 0
                    for index in indices {
                        putVarint(UInt64(index - next), out, &at)
                        next = index &+ 1
                    }
                case .bitmap:
                    let bitmap = out + at
                    bitmap.update(repeating: 0, count: plan.bytes)
                    for index in indices { bitmap[Int(index >> 3)] |= 1 << (index & 7) }
                    at += plan.bytes
                case .rice:
                    let b = plan.parameter
                    out[at] = UInt8(b)
                    at += 1
                    var bits = BitWriter(out: out, at: at)
                    var next: UInt32 = 0
                    for index in indices {
                        let gap = index - next
                        next = index &+ 1
                        var quotient = Int(gap >> UInt32(b))
                        while quotient >= 32 {
                            bits.put(0xFFFF_FFFF, 32)
                            quotient -= 32
                        }
                        bits.put((1 << UInt64(quotient)) - 1, quotient + 1)
                        bits.put(UInt64(gap) & ((1 << UInt64(b)) - 1), b)
                    }
                    at = bits.finish()
                }
            }
            values.withUnsafeBufferPointer { values in
                let raw = UnsafeMutableRawPointer(out + at)
                switch valueFormat {
                case .float32:
                    for i in 0..<values.count { raw.storeBytes(of: values[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
                case .bf16:
                    for i in 0..<values.count { raw.storeBytes(of: UInt16(truncatingIfNeeded: values[i].bitPattern >> 16).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
                }
            }
            at += valueFormat.bytes * values.count
            precondition(at == size, "sparse encoding wrote \(at) bytes, planned \(size)")
            initialized = size
        }
    }

    /// Bytes of `encoded()`.
    public var encodedSize: Int {
        1 + varintSize(UInt64(count)) + varintSize(UInt64(indices.count)) + indexPlan.bytes + valueFormat.bytes * values.count
    }

    /// Decodes `encoded()` bytes for a tensor of `count` elements; with `nonzeros`, also
    /// requires exactly that many entries (the k both sides compute), with `valueFormat` that
    /// format. Throws `.malformedPayload` on an unknown format, a different count, truncated or
    /// overlong varints or Rice codes, indices out of bounds or not ascending, set padding bits,
    /// an index encoding other than the one `encoded()` would choose, a wrong number of value
    /// bytes, or trailing bytes.
    public init(decoding bytes: UnsafeRawBufferPointer, count: Int, nonzeros: Int? = nil, valueFormat expectedValues: ValueFormat? = nil) throws(CompressionError) {
        var reader = ByteReader(bytes)
        guard let formatByte = reader.byte(), let format = IndexFormat(rawValue: formatByte & 0x0F),
              let valueFormat = ValueFormat(rawValue: formatByte >> 4) else {
            throw CompressionError(.malformedPayload, bytes.isEmpty ? "empty sparse gradient" : "unknown sparse format \(bytes[0])")
        }
        if let expectedValues, valueFormat != expectedValues {
            throw CompressionError(.malformedPayload, "sparse values in \(valueFormat.name); this tensor's top-k sends \(expectedValues.name)")
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
        let valueBytes = valueFormat.bytes * entries
        // Every entry needs its value bytes: check before allocating.
        guard reader.remaining >= valueBytes else {
            throw CompressionError(.malformedPayload, "\(entries) entries need at least \(valueBytes) more bytes, \(reader.remaining) left")
        }
        var indices = [UInt32]()
        indices.reserveCapacity(entries)
        var riceParameter = 0
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
        case .rice:
            guard let parameter = reader.byte(), parameter <= 31 else {
                throw CompressionError(.malformedPayload, "missing or out-of-range Rice parameter (0–31)")
            }
            riceParameter = Int(parameter)
            guard reader.remaining >= valueBytes, let code = reader.bytes(reader.remaining - valueBytes) else {
                throw CompressionError(.malformedPayload, "\(entries) entries need at least \(valueBytes) more bytes, \(reader.remaining) left")
            }
            var bits = BitReader(code)
            var next: UInt64 = 0
            let b = UInt64(parameter)
            let largestQuotient = UInt64(count) >> b
            for position in 0..<entries {
                guard let quotient = bits.unary(atMost: largestQuotient), let low = bits.read(Int(b)) else {
                    throw CompressionError(.malformedPayload, "truncated or out-of-range Rice code at position \(position)")
                }
                let index = next + (quotient << b | low)
                guard index < UInt64(count) else {
                    throw CompressionError(.malformedPayload, "index \(index) at position \(position) is outside a tensor of \(count)")
                }
                indices.append(UInt32(index))
                next = index + 1
            }
            guard bits.isPaddingOnly else {
                throw CompressionError(.malformedPayload, "Rice codes end with nonzero padding or trailing bytes")
            }
        }
        guard reader.remaining == valueBytes, let valueData = reader.bytes(valueBytes) else {
            throw CompressionError(.malformedPayload, "\(entries) values take \(valueBytes) bytes, \(reader.remaining) left")
        }
        let plan = indices.withUnsafeBufferPointer { Self.indexPlan($0, count: count) }
        guard plan.format == format, plan.parameter == riceParameter else {
            throw CompressionError(.malformedPayload, "indices encoded as \(format) (parameter \(riceParameter)), not as the smaller \(plan.format) (parameter \(plan.parameter))")
        }
        let values = [Float](unsafeUninitializedCapacity: entries) { buffer, initialized in
            switch valueFormat {
            case .float32:
                for i in 0..<entries {
                    buffer[i] = Float(bitPattern: UInt32(littleEndian: valueData.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                }
            case .bf16:
                for i in 0..<entries {
                    buffer[i] = BFloat16.float(UInt16(littleEndian: valueData.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                }
            }
            initialized = entries
        }
        self.init(unchecked: count, indices: indices, values: values, valueFormat: valueFormat)
    }

    /// Decodes `encoded()` bytes (see `init(decoding:count:nonzeros:valueFormat:)`).
    public init(decoding bytes: [UInt8], count: Int, nonzeros: Int? = nil, valueFormat: ValueFormat? = nil) throws(CompressionError) {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(CompressionError) in try SparseGradient(decoding: raw, count: count, nonzeros: nonzeros, valueFormat: valueFormat) }
        }
        self = try result.get()
    }

    /// The expected `encodedSize` of k entries at random positions among `count` elements
    /// (traffic estimates; the real size depends on where the entries fall). Gaps are then
    /// about geometric with mean μ = count/k − 1 (q = μ/(μ+1) the chance of one more): a gap
    /// varint takes 1 + Σⱼ q^(128ʲ) bytes on average, a Rice code b + 1 + r/(1 − r) bits with
    /// r = q^(2ᵇ); the smaller of those and the bitmap.
    public static func estimatedEncodedSize(count: Int, nonzeros k: Int, valueFormat: ValueFormat = .float32) -> Int {
        guard k > 0 else { return 1 + varintSize(UInt64(count)) + 1 }
        let mean = max(0, Double(count) / Double(k) - 1)
        let logQ = mean > 0 ? log(mean / (mean + 1)) : -Double.infinity
        var bytesPerGap = 1.0
        for j in 1...4 { bytesPerGap += exp(pow(128, Double(j)) * logQ) }
        var indexBytes = Double(k) * bytesPerGap
        let center = mean < 1 ? 0 : Int(log2(mean))
        for b in max(0, center - 2)...min(31, center + 1) {
            let r = exp(pow(2, Double(b)) * logQ)
            let bits = Double(k) * (Double(b) + 1 + r / (1 - r))
            indexBytes = min(indexBytes, 1 + bits / 8)
        }
        let bytes = min(Double((count + 7) / 8), indexBytes)
        return 1 + varintSize(UInt64(count)) + varintSize(UInt64(k)) + Int(bytes.rounded()) + valueFormat.bytes * k
    }
}

/// Packs bit fields LSB first into bytes (Rice codes).
private struct BitWriter {
    let out: UnsafeMutablePointer<UInt8>
    var at: Int
    var pending: UInt64 = 0
    var filled = 0

    init(out: UnsafeMutablePointer<UInt8>, at: Int) {
        self.out = out
        self.at = at
    }

    /// The low `count` (≤ 32) bits of `value`.
    @inline(__always)
    mutating func put(_ value: UInt64, _ count: Int) {
        pending |= value << UInt64(filled)
        filled += count
        while filled >= 8 {
            out[at] = UInt8(truncatingIfNeeded: pending)
            pending >>= 8
            filled -= 8
            at += 1
        }
    }

    /// Writes the last partial byte (zero-padded); returns the offset after it.
    mutating func finish() -> Int {
        if filled > 0 {
            out[at] = UInt8(truncatingIfNeeded: pending)
            at += 1
        }
        return at
    }
}

/// Reads `BitWriter`'s fields back, bounds-checked.
private struct BitReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0
    var pending: UInt64 = 0
    var available = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inline(__always)
    private mutating func refill() {
        while available <= 56 && offset < bytes.count {
            pending |= UInt64(bytes[offset]) << UInt64(available)
            offset += 1
            available += 8
        }
    }

    /// A run of 1 bits ended by a 0 bit: the run's length, or nil when the bits end first or
    /// the run exceeds `limit`.
    mutating func unary(atMost limit: UInt64) -> UInt64? {
        var run: UInt64 = 0
        while true {
            refill()
            guard available > 0 else { return nil }
            let ones = (~pending).trailingZeroBitCount
            if ones < available {
                run += UInt64(ones)
                pending = ones + 1 >= 64 ? 0 : pending >> UInt64(ones + 1)
                available -= ones + 1
                return run <= limit ? run : nil
            }
            run += UInt64(available)
            pending = 0
            available = 0
            guard run <= limit else { return nil }
        }
    }

    /// The next `count` (≤ 31) bits, or nil when fewer are left.
    mutating func read(_ count: Int) -> UInt64? {
        guard count > 0 else { return 0 }
        refill()
        guard available >= count else { return nil }
        let value = pending & ((1 << UInt64(count)) - 1)
        pending >>= UInt64(count)
        available -= count
        return value
    }

    /// Whether what is left is the zero padding of the last byte only.
    var isPaddingOnly: Bool { offset == bytes.count && available < 8 && pending == 0 }
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
