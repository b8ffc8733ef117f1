#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// SplitMix64 exactly as workload W1 defines it: draw i (i = 1, 2, …) of the stream seeded with
/// s is `mix(s + i·0x9E3779B97F4A7C15 mod 2^64)`. Uniforms and normals follow docs/w1.md too, so
/// every implementation draws the same numbers.
public struct SplitMix64: Sendable, RandomNumberGenerator {
    public let seed: UInt64
    /// How many draws were taken.
    public private(set) var drawn: UInt64 = 0

    public init(seed: UInt64) { self.seed = seed }

    public mutating func next() -> UInt64 {
        drawn &+= 1
        return Self.mix(seed &+ drawn &* 0x9E37_79B9_7F4A_7C15)
    }

    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform in [0, 1): `(draw >> 11) · 2^-53`.
    public mutating func uniform() -> Double {
        Double(next() >> 11) * 0x1p-53
    }

    /// A standard normal from two consecutive uniforms u1, u2:
    /// `sqrt(-2·ln(1-u1)) · cos(2π·u2)` in float64 (the cosine branch only).
    public mutating func normal() -> Double {
        let u1 = uniform()
        let u2 = uniform()
        return (-2.0 * log(1.0 - u1)).squareRoot() * cos(2.0 * Double.pi * u2)
    }
}

/// The deterministic sample order of DESIGN.md invariant 2: epoch e of a data set of n samples
/// is a Fisher–Yates permutation drawn from the stream seeded with `seed + 1000 + e`
/// (for i from n−1 down to 1, swap positions i and `draw mod (i+1)`).
public enum DataOrder {
    public static func permutation(seed: UInt64, epoch: UInt64, count: Int) -> [Int32] {
        precondition(count >= 0 && count <= Int(Int32.max), "a data set holds 0 to 2^31-1 samples")
        var order = (0..<count).map { Int32($0) }
        guard count > 1 else { return order }
        var rng = SplitMix64(seed: seed &+ 1000 &+ epoch)
        for i in stride(from: count - 1, through: 1, by: -1) {
            let j = Int(rng.next() % UInt64(i + 1))
            order.swapAt(i, j)
        }
        return order
    }

    /// The positions [t·B, (t+1)·B) of an epoch's order that step t consumes.
    public static func stepRange(step: Int, batch: Int) -> Range<Int> {
        step * batch..<(step + 1) * batch
    }
}
