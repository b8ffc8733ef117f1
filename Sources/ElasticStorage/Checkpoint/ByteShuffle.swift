/// The byte-plane shuffle of 4-byte elements (`CheckpointTransform.byteplane4`): element i's
/// least significant byte goes to plane 0 at position i, its next byte to plane 1, and so on;
/// the planes follow each other. Floats of similar magnitude share their sign/exponent byte
/// (plane 3) and the top mantissa bits (plane 2), so those planes compress far better than the
/// interleaved bytes; the low planes are close to random either way.
///
/// Defined on the values, not on memory (byte k of element i is `(bits >> 8k) & 0xFF`), so the
/// stored form is the same on any byte order. Runs at memory speed: one pass, no allocation but
/// the output.
public enum ByteShuffle {
    /// Writes the planes of `source` to `destination` (4 × source.count bytes).
    public static func shuffle(_ source: UnsafeBufferPointer<UInt32>, into destination: UnsafeMutableRawBufferPointer) {
        let n = source.count
        precondition(destination.count == 4 * n, "byte shuffle: \(destination.count) bytes for \(n) elements")
        guard n > 0, let src = source.baseAddress, let dst = destination.baseAddress else { return }
        let p0 = dst.assumingMemoryBound(to: UInt8.self)
        let p1 = p0 + n
        let p2 = p1 + n
        let p3 = p2 + n
        var i = 0
        while i < n {
            let word = src[i]
            p0[i] = UInt8(truncatingIfNeeded: word)
            p1[i] = UInt8(truncatingIfNeeded: word &>> 8)
            p2[i] = UInt8(truncatingIfNeeded: word &>> 16)
            p3[i] = UInt8(truncatingIfNeeded: word &>> 24)
            i &+= 1
        }
    }

    /// Rebuilds the elements from their planes: the inverse of `shuffle`.
    public static func unshuffle(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<UInt32>) {
        let n = destination.count
        precondition(source.count == 4 * n, "byte unshuffle: \(source.count) bytes for \(n) elements")
        guard n > 0, let src = source.baseAddress, let dst = destination.baseAddress else { return }
        let p0 = src.assumingMemoryBound(to: UInt8.self)
        let p1 = p0 + n
        let p2 = p1 + n
        let p3 = p2 + n
        var i = 0
        while i < n {
            dst[i] = UInt32(p0[i]) | UInt32(p1[i]) &<< 8 | UInt32(p2[i]) &<< 16 | UInt32(p3[i]) &<< 24
            i &+= 1
        }
    }

    /// The planes of `values` (convenience for tests and tools).
    public static func shuffle(_ values: [Float]) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: 4 * values.count)
        values.withUnsafeBufferPointer { floats in
            floats.withMemoryRebound(to: UInt32.self) { words in
                output.withUnsafeMutableBytes { shuffle(words, into: $0) }
            }
        }
        return output
    }

    /// The floats whose planes are `bytes` (whose count must be a multiple of 4).
    public static func unshuffle(_ bytes: [UInt8]) -> [Float] {
        precondition(bytes.count % 4 == 0, "byte unshuffle: \(bytes.count) bytes is not a whole number of floats")
        var output = [Float](repeating: 0, count: bytes.count / 4)
        bytes.withUnsafeBytes { raw in
            output.withUnsafeMutableBufferPointer { floats in
                floats.withMemoryRebound(to: UInt32.self) { unshuffle(raw, into: $0) }
            }
        }
        return output
    }
}
