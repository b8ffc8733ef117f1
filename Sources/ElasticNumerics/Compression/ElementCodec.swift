/// An element-wise encoding of float32 gradients for the ring all-reduce: every message is
/// encoded on its own (`encode`), and the receiver folds it into its float32 buffer
/// (`decodeAdd`, reduce-scatter) or overwrites with it (`decode`, all-gather).
/// All multi-byte fields are little-endian. Deterministic: equal inputs give equal bytes.
///
/// Error bounds, per element x (u is the unit roundoff of the format):
/// - `float32`: exact (a byte copy).
/// - `fp16` (IEEE binary16, round to nearest even, u = 2⁻¹¹): |x̂ − x| ≤ 2⁻¹¹·|x| when
///   2⁻¹⁴ ≤ |x| < 65520; |x̂ − x| ≤ 2⁻²⁵ when |x| < 2⁻¹⁴ (fp16 subnormals, absolute);
///   |x| ≥ 65520 becomes ±inf. Gradients are small: values below 6.1e-5 lose relative precision.
/// - `bf16` (the upper half of float32, round to nearest even, u = 2⁻⁸): |x̂ − x| ≤ 2⁻⁸·|x|
///   for normal x below (2 − 2⁻⁸)·2¹²⁷ ≈ 3.396e38 (larger becomes ±inf); |x̂ − x| ≤ 2⁻¹³⁴ for
///   float32 subnormals. float32's exponent range, so no underflow trouble.
/// - `int8(chunk:)`: each group of `chunk` elements stores s = a/127 (a = max |x| of the group)
///   and q = round(x/s) in [−127, 127]; |x̂ − x| ≤ 1.0001·a/254 (half a step, plus float32
///   rounding of s, 1/s and q·s) while s is a normal float (a ≥ 1.5e-36; below, ≤ a/127).
///   An all-zero group decodes to zeros.
///
/// Special values: ±0 keep their sign (fp16, bf16; int8 gives +0); ±inf stay ±inf and NaN stays
/// NaN in fp16 and bf16 (as a quiet NaN); in int8 a group holding any inf or NaN gets a NaN scale
/// and decodes to all NaN, so a diverged gradient is never hidden.
///
/// Each reduce-scatter hop adds a float32 rounding and a re-encoding, and the all-gather one
/// more encoding, so a D-replica ring all-reduce (see `GradientExchange.ring` for the rules
/// that keep replicas bit-identical) returns r with, per element,
/// |r − Σg| ≤ D·(u + 2⁻²³)·Σ|gᵢ|·(1 + D·u) for fp16/bf16 (+ D·2⁻²⁵ in fp16's subnormal range)
/// and ≤ 1.0001·D·Σ‖gᵢ‖∞/254 + D·2⁻²³·Σ|gᵢ| for int8 (‖·‖∞ over the element's group).
public enum ElementCodec: Sendable, Hashable {
    case float32
    case fp16
    case bf16
    /// int8 with one float32 scale per `chunk` elements. Layout: ⌈count/chunk⌉ float32 scales,
    /// then count int8 values.
    case int8(chunk: Int)

    /// Bytes of `count` encoded elements.
    public func encodedSize(count: Int) -> Int {
        precondition(count >= 0, "negative element count \(count)")
        switch self {
        case .float32: return 4 * count
        case .fp16, .bf16: return 2 * count
        case .int8(let chunk):
            precondition(chunk >= 1, "int8 chunks hold at least one element")
            return count + 4 * ((count + chunk - 1) / chunk)
        }
    }

    // MARK: Encoding

    /// Encodes `values` into `bytes`, which must hold exactly `encodedSize(count: values.count)`.
    public func encode(_ values: UnsafeBufferPointer<Float>, into bytes: UnsafeMutableRawBufferPointer) {
        let count = values.count
        precondition(bytes.count == encodedSize(count: count),
                     "\(self) encodes \(count) floats into \(encodedSize(count: count)) bytes, not \(bytes.count)")
        guard count > 0, let src = values.baseAddress, let dst = bytes.baseAddress else { return }
        switch self {
        case .float32:
            if isLittleEndianHost {
                dst.copyMemory(from: src, byteCount: 4 * count)
            } else {
                for i in 0..<count { dst.storeBytes(of: src[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            }
        case .fp16:
            for i in 0..<count { dst.storeBytes(of: HalfFloat.bits(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .bf16:
            for i in 0..<count { dst.storeBytes(of: BFloat16.bits(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .int8(let chunk):
            Int8Codec.encode(src, count: count, chunk: chunk, into: dst)
        }
    }

    /// `values` encoded.
    public func encode(_ values: UnsafeBufferPointer<Float>) -> [UInt8] {
        let size = encodedSize(count: values.count)
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            encode(values, into: UnsafeMutableRawBufferPointer(buffer))
            initialized = size
        }
    }

    /// `values` encoded.
    public func encode(_ values: [Float]) -> [UInt8] {
        values.withUnsafeBufferPointer { encode($0) }
    }

    // MARK: Decoding

    /// Decodes `bytes` into `values` (overwriting them; `values.count` elements). Throws
    /// `.malformedPayload` when the size does not match or an int8 scale is impossible
    /// (negative or infinite); `values` is then unchanged.
    public func decode(_ bytes: UnsafeRawBufferPointer, into values: UnsafeMutableBufferPointer<Float>) throws(CompressionError) {
        try decode(bytes, into: values, accumulate: false)
    }

    /// Decodes `bytes` and adds them to `values` in float32: one reduce-scatter hop. Throws like
    /// `decode(_:into:)`, leaving `values` unchanged.
    public func decodeAdd(_ bytes: UnsafeRawBufferPointer, into values: UnsafeMutableBufferPointer<Float>) throws(CompressionError) {
        try decode(bytes, into: values, accumulate: true)
    }

    /// `count` elements decoded from `bytes`.
    public func decode(_ bytes: [UInt8], count: Int) throws(CompressionError) -> [Float] {
        // Every codec takes at least a byte per element: check before allocating (or overflowing).
        guard count >= 0, count <= bytes.count, bytes.count == encodedSize(count: count) else {
            throw CompressionError(.malformedPayload, "\(self) payload of \(bytes.count) bytes cannot hold \(count) elements")
        }
        var values = [Float](repeating: 0, count: count)
        let result = bytes.withUnsafeBytes { raw in
            values.withUnsafeMutableBufferPointer { buffer in
                Result { () throws(CompressionError) in try decode(raw, into: buffer, accumulate: false) }
            }
        }
        try result.get()
        return values
    }

    /// Adds the elements encoded in `bytes` to `values[offset..<offset + n]` (n from the size).
    public func decodeAdd(_ bytes: [UInt8], into values: inout [Float], at offset: Int = 0, count: Int) throws(CompressionError) {
        guard offset >= 0, count >= 0, offset <= values.count, count <= values.count - offset else {
            throw CompressionError(.protocolViolation, "elements \(offset)..<\(offset + count) lie outside a buffer of \(values.count)")
        }
        let result = bytes.withUnsafeBytes { raw in
            values.withUnsafeMutableBufferPointer { buffer in
                Result { () throws(CompressionError) in
                    try decode(raw, into: UnsafeMutableBufferPointer(rebasing: buffer[offset..<offset + count]), accumulate: true)
                }
            }
        }
        try result.get()
    }

    private func decode(_ bytes: UnsafeRawBufferPointer, into values: UnsafeMutableBufferPointer<Float>, accumulate: Bool) throws(CompressionError) {
        let count = values.count
        guard bytes.count == encodedSize(count: count) else {
            throw CompressionError(.malformedPayload, "\(self) payload of \(bytes.count) bytes; \(count) elements take \(encodedSize(count: count))")
        }
        guard count > 0, let src = bytes.baseAddress, let dst = values.baseAddress else { return }
        switch self {
        case .float32:
            if accumulate {
                for i in 0..<count { dst[i] += Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
            } else if isLittleEndianHost {
                UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: 4 * count)
            } else {
                for i in 0..<count { dst[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
            }
        case .fp16:
            if accumulate {
                for i in 0..<count { dst[i] += HalfFloat.float(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            } else {
                for i in 0..<count { dst[i] = HalfFloat.float(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            }
        case .bf16:
            if accumulate {
                for i in 0..<count { dst[i] += BFloat16.float(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            } else {
                for i in 0..<count { dst[i] = BFloat16.float(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            }
        case .int8(let chunk):
            try Int8Codec.decode(src, count: count, chunk: chunk, into: dst, accumulate: accumulate)
        }
    }
}

/// float32 payloads are the in-memory bytes on little-endian hosts (all supported ones).
let isLittleEndianHost = UInt16(1).littleEndian == 1

/// IEEE binary16 conversions by bit manipulation (F. Giesen's round-to-nearest-even method):
/// bit-identical to `Float16(x)` but several times faster on x86-64 without F16C, where the
/// compiler calls a runtime routine per element.
enum HalfFloat {
    /// The binary16 bits of `x`, rounded to nearest even; NaN becomes the quiet NaN 0x7E00 (sign kept).
    @inline(__always)
    static func bits(_ x: Float) -> UInt16 {
        var f = x.bitPattern
        let sign = f & 0x8000_0000
        f ^= sign
        let o: UInt32
        if f >= 0x4780_0000 {
            // |x| ≥ 65536, inf or NaN (smaller overflows round up to inf below).
            o = f > 0x7F80_0000 ? 0x7E00 : 0x7C00
        } else if f < 0x3880_0000 {
            // |x| < 2⁻¹⁴: a subnormal or zero. Adding 0.5 aligns the 10 mantissa bits at the
            // bottom of the float; the float addition rounds to nearest even.
            o = (Float(bitPattern: f) + 0.5).bitPattern &- 0x3F00_0000
        } else {
            // Rebias the exponent and round the 13 dropped bits to nearest even.
            let odd = (f >> 13) & 1
            o = (f &+ 0xC800_0FFF &+ odd) >> 13
        }
        return UInt16(truncatingIfNeeded: o | (sign >> 16))
    }

    /// The float32 value of binary16 bits (exact).
    @inline(__always)
    static func float(_ h: UInt16) -> Float {
        let shiftedExponent: UInt32 = 0x7C00 << 13
        var o = (UInt32(h) & 0x7FFF) << 13
        let exponent = o & shiftedExponent
        o &+= (127 - 15) << 23
        if exponent == shiftedExponent {
            o &+= (128 - 16) << 23  // inf or NaN
        } else if exponent == 0 {
            // Zero or subnormal: renormalize through a float subtraction.
            o &+= 1 << 23
            o = (Float(bitPattern: o) - Float(bitPattern: 113 << 23)).bitPattern
        }
        return Float(bitPattern: o | (UInt32(h) & 0x8000) << 16)
    }
}

/// bfloat16: the upper 16 bits of a float32, rounded to nearest even.
enum BFloat16 {
    @inline(__always)
    static func bits(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        let rounded = UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
        let quietNaN = UInt16(truncatingIfNeeded: b >> 16) | 0x0040
        return (b & 0x7FFF_FFFF) > 0x7F80_0000 ? quietNaN : rounded
    }

    @inline(__always)
    static func float(_ h: UInt16) -> Float {
        Float(bitPattern: UInt32(h) << 16)
    }
}

/// int8 with a per-group absmax scale: ⌈count/chunk⌉ float32 scales, then count int8 values.
enum Int8Codec {
    /// 1.5·2²³: adding it to |y| ≤ 2²² rounds y to an integer (nearest even) in the low bits.
    static let roundingMagic: Float = 12_582_912

    static func encode(_ src: UnsafePointer<Float>, count: Int, chunk: Int, into dst: UnsafeMutableRawPointer) {
        let groups = (count + chunk - 1) / chunk
        let quantized = (dst + 4 * groups).assumingMemoryBound(to: Int8.self)
        for group in 0..<groups {
            let start = group * chunk
            let end = min(count, start + chunk)
            var maxBits: UInt32 = 0
            for i in start..<end { maxBits = max(maxBits, src[i].bitPattern & 0x7FFF_FFFF) }
            let scale: Float
            if maxBits >= 0x7F80_0000 {
                // inf or NaN in the group: poison it (NaN scale), never hide a diverged gradient.
                scale = .nan
                (quantized + start).update(repeating: 0, count: end - start)
            } else if maxBits == 0 {
                scale = 0
                (quantized + start).update(repeating: 0, count: end - start)
            } else {
                scale = Float(bitPattern: maxBits) / 127
                let inverse = 1 / scale
                if inverse.isFinite {
                    for i in start..<end {
                        let shifted = src[i] * inverse + roundingMagic
                        let q = Int32(bitPattern: shifted.bitPattern) &- 0x4B40_0000
                        quantized[i] = Int8(truncatingIfNeeded: min(127, max(-127, q)))
                    }
                } else {
                    // A scale so small that 1/scale overflows: divide in float64.
                    for i in start..<end {
                        let q = (Double(src[i]) / Double(scale)).rounded(.toNearestOrEven)
                        quantized[i] = Int8(min(127, max(-127, q)))
                    }
                }
            }
            dst.storeBytes(of: scale.bitPattern.littleEndian, toByteOffset: 4 * group, as: UInt32.self)
        }
    }

    static func decode(_ src: UnsafeRawPointer, count: Int, chunk: Int, into dst: UnsafeMutablePointer<Float>,
                       accumulate: Bool) throws(CompressionError) {
        let groups = (count + chunk - 1) / chunk
        // Check every scale first, so that a bad payload leaves the buffer unchanged.
        for group in 0..<groups {
            let scale = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * group, as: UInt32.self)))
            guard scale.isNaN || (scale.isFinite && scale.sign == .plus) else {
                throw CompressionError(.malformedPayload, "int8 group \(group) has scale \(scale); an encoder writes a finite non-negative scale or NaN")
            }
        }
        let quantized = (src + 4 * groups).assumingMemoryBound(to: Int8.self)
        for group in 0..<groups {
            let scale = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * group, as: UInt32.self)))
            let start = group * chunk
            let end = min(count, start + chunk)
            if accumulate {
                for i in start..<end { dst[i] += Float(quantized[i]) * scale }
            } else {
                for i in start..<end { dst[i] = Float(quantized[i]) * scale }
            }
        }
    }
}
