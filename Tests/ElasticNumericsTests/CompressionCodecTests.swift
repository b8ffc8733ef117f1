import ElasticCore
import ElasticNumerics
import ElasticTestSupport
import Foundation
import Testing

// MARK: - Shared helpers of the Compression*Tests files

/// Seeded generators for the compression tests (SplitMix64; the seed is printed by TestSeed).
struct CompressionRandom {
    var rng: SplitMix64

    init(_ test: String, salt: UInt64 = 0) {
        rng = SplitMix64(seed: TestSeed.make(test) &+ salt)
    }

    mutating func uniform(_ lower: Double = -1, _ upper: Double = 1) -> Double {
        lower + (upper - lower) * rng.uniform()
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(rng.next() % UInt64(range.count))
    }

    mutating func gaussians(_ count: Int, scale: Double = 1) -> [Float] {
        (0..<count).map { _ in Float(rng.normal() * scale) }
    }

    /// Signed values whose magnitudes spread over `decades` powers of ten below `top`.
    mutating func spread(_ count: Int, top: Double = 1, decades: Double = 4) -> [Float] {
        (0..<count).map { _ in
            let magnitude = top * pow(10, -decades * rng.uniform())
            return Float(rng.next() & 1 == 0 ? magnitude : -magnitude)
        }
    }

    /// rows × cols of rank ≤ s: A·Bᵀ with Gaussian A (rows × s) and B (cols × s).
    mutating func lowRank(rows: Int, cols: Int, rank s: Int) -> [Float] {
        let a = gaussians(rows * s)
        let b = gaussians(cols * s)
        return product(a, b, rows: rows, cols: cols, inner: s)
    }
}

/// A (rows × inner) · Bᵀ (B is cols × inner), accumulated in float64, rounded once.
func product(_ a: [Float], _ b: [Float], rows: Int, cols: Int, inner: Int) -> [Float] {
    var out = [Float](repeating: 0, count: rows * cols)
    for i in 0..<rows {
        for j in 0..<cols {
            var sum = 0.0
            for k in 0..<inner { sum += Double(a[i * inner + k]) * Double(b[j * inner + k]) }
            out[i * cols + j] = Float(sum)
        }
    }
    return out
}

/// Bit patterns equal (so NaN payloads and the sign of zero count).
func sameBits(_ a: [Float], _ b: [Float]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
}

func largestMagnitude(_ values: [Float]) -> Float {
    values.reduce(0) { max($0, abs($1)) }
}

/// An in-memory ring all-reduce (sum) of one buffer per replica, on `RingAllReduce`'s schedule,
/// with every message encoded by `codec` as the network layer must do it: a reduce-scatter hop
/// decodes the received chunk and adds it in float32 (`decodeAdd`), then encodes the sum to
/// forward; in the all-gather the owner encodes its reduced segment once AND decodes its own
/// bytes back, and every other replica decodes and forwards the received bytes unchanged.
/// Returns the replicas' buffers and the payload bytes sent by all ranks together.
func compressedRingSum(_ inputs: [[Float]], codec: ElementCodec, chunkElements: Int) throws -> (buffers: [[Float]], bytesSent: Int) {
    let size = inputs.count
    var buffers = inputs
    guard size > 1 else { return (buffers, 0) }
    let count = inputs[0].count
    let segments = EvenSplit.ranges(parts: size, count: count)
    func mod(_ value: Int) -> Int { ((value % size) + size) % size }
    func chunks(_ range: Range<Int>) -> [Range<Int>] {
        guard !range.isEmpty else { return [range] }
        return stride(from: range.lowerBound, to: range.upperBound, by: chunkElements).map { $0..<min($0 + chunkElements, range.upperBound) }
    }
    var bytesSent = 0
    for round in 0..<(size - 1) {
        // Everyone encodes what it sends this round from its state at the start of the round.
        let messages: [[(Range<Int>, [UInt8])]] = (0..<size).map { rank in
            chunks(segments[mod(rank - round)]).map { range in
                (range, buffers[rank].withUnsafeBufferPointer { codec.encode(UnsafeBufferPointer(rebasing: $0[range])) })
            }
        }
        for rank in 0..<size {
            for (range, bytes) in messages[mod(rank - 1)] {
                bytesSent += bytes.count
                try codec.decodeAdd(bytes, into: &buffers[rank], at: range.lowerBound, count: range.count)
            }
        }
    }
    // All-gather: rank r owns segment r + 1; its bytes travel around unchanged.
    var held: [[Int: [(Range<Int>, [UInt8])]]] = Array(repeating: [:], count: size)
    for rank in 0..<size {
        let segment = mod(rank + 1)
        let encoded = chunks(segments[segment]).map { range in
            (range, buffers[rank].withUnsafeBufferPointer { codec.encode(UnsafeBufferPointer(rebasing: $0[range])) })
        }
        for (range, bytes) in encoded {
            let decoded = try codec.decode(bytes, count: range.count)
            buffers[rank].replaceSubrange(range, with: decoded)
        }
        held[rank][segment] = encoded
    }
    for round in 0..<(size - 1) {
        let sends = (0..<size).map { rank in (mod(rank + 1 - round), held[rank][mod(rank + 1 - round)]!) }
        for rank in 0..<size {
            let (segment, message) = sends[mod(rank - 1)]
            #expect(segment == mod(rank - round))
            for (range, bytes) in message {
                bytesSent += bytes.count
                let decoded = try codec.decode(bytes, count: range.count)
                buffers[rank].replaceSubrange(range, with: decoded)
            }
            held[rank][segment] = message
        }
    }
    return (buffers, bytesSent)
}

// MARK: - Element codecs

@Suite("Compression: element codecs (fp16, bf16, int8)")
struct CompressionCodecTests {
    static let fp16Unit = 0x1p-11
    static let bf16Unit = 0x1p-8

    /// The fp16 error bound of ElementCodec's documentation.
    static func fp16Bound(_ x: Float) -> Double {
        abs(x) < 0x1p-14 ? 0x1p-25 : fp16Unit * Double(abs(x))
    }

    @Test func fp16MatchesFloat16ConversionBitForBit() {
        var random = CompressionRandom(#function)
        // Random bit patterns (every exponent), plus the edges of the format.
        var xs: [Float] = (0..<200_000).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: random.rng.next())) }
        let edges: [Float] = [0, -0.0, 1, -1, 65504, 65519.996, 65520, 65536, 0x1p-14, 0x1p-24, 0x1p-25,
                              0x1.0001p-25, 0x1.8p-24, 0x1.ffcp-15, 0x1p-26, .infinity, -.infinity,
                              .greatestFiniteMagnitude, .leastNonzeroMagnitude, 2049, 2051, 4097]
        xs += edges
        for scale in stride(from: -30.0, through: 16.0, by: 0.25) {
            xs.append(Float(pow(2, scale)) * Float(random.uniform(0.5, 1.5)))
        }
        let encoded = ElementCodec.fp16.encode(xs)
        for (i, x) in xs.enumerated() {
            let bits = UInt16(encoded[2 * i]) | UInt16(encoded[2 * i + 1]) << 8
            if x.isNaN {
                #expect(Float16(bitPattern: bits).isNaN)
                #expect(bits & 0x8000 == UInt16(x.bitPattern >> 16) & 0x8000, "NaN keeps its sign")
            } else {
                #expect(bits == Float16(x).bitPattern, "fp16 of \(x) (bits \(String(x.bitPattern, radix: 16)))")
            }
        }
    }

    @Test func fp16DecodesEveryHalfExactly() throws {
        let patterns = (0...0xFFFF).map { UInt16($0) }
        let bytes = patterns.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        let decoded = try ElementCodec.fp16.decode(bytes, count: patterns.count)
        for (bits, value) in zip(patterns, decoded) {
            let reference = Float(Float16(bitPattern: bits))
            if reference.isNaN {
                #expect(value.isNaN && value.sign == reference.sign)
            } else {
                #expect(value.bitPattern == reference.bitPattern, "half \(String(bits, radix: 16))")
            }
        }
    }

    @Test func fp16RoundTripWithinBound() throws {
        var random = CompressionRandom(#function)
        let xs = random.spread(100_000, top: 60000, decades: 14)  // 6e4 down to 6e-10
        let decoded = try ElementCodec.fp16.decode(ElementCodec.fp16.encode(xs), count: xs.count)
        for (x, y) in zip(xs, decoded) {
            #expect(abs(Double(y) - Double(x)) <= Self.fp16Bound(x), "fp16: \(x) → \(y)")
        }
    }

    @Test func fp16SpecialValues() throws {
        let xs: [Float] = [0, -0.0, .infinity, -.infinity, .nan, -.nan, 65504, 65519, 65520, -1e6, 1e-8, -1e-30, 0x1p-24, 0x1p-25, 0x1.8p-25]
        let y = try ElementCodec.fp16.decode(ElementCodec.fp16.encode(xs), count: xs.count)
        #expect(y[0].bitPattern == Float(0).bitPattern && y[1].bitPattern == Float(-0.0).bitPattern, "zeros keep their sign")
        #expect(y[2] == .infinity && y[3] == -.infinity)
        #expect(y[4].isNaN && y[5].isNaN && y[5].sign == .minus)
        #expect(y[6] == 65504 && y[7] == 65504, "below the overflow threshold: the largest half")
        #expect(y[8] == .infinity && y[9] == -.infinity, "≥ 65520 overflows to inf")
        #expect(abs(y[10] - 1e-8) <= 0x1p-25, "subnormal range: absolute error ≤ 2⁻²⁵")
        #expect(y[11].bitPattern == Float(-0.0).bitPattern, "underflow keeps the sign")
        #expect(y[12] == 0x1p-24 && y[13] == 0 && y[14] == 0x1p-24, "ties to even at the bottom")
    }

    /// bfloat16 by definition: the nearer of the two neighbouring bf16 values, ties to even.
    static func referenceBF16(_ x: Float) -> Float {
        let low = Float(bitPattern: x.bitPattern & 0xFFFF_0000)
        let high = Float(bitPattern: (x.bitPattern & 0xFFFF_0000) &+ 0x1_0000)
        let (dLow, dHigh) = (abs(Double(x) - Double(low)), abs(Double(high) - Double(x)))
        if dLow < dHigh { return low }
        if dHigh < dLow { return high }
        return (x.bitPattern >> 16) & 1 == 0 ? low : high
    }

    @Test func bf16RoundsToNearestEvenWithinBound() throws {
        var random = CompressionRandom(#function)
        var xs: [Float] = (0..<200_000).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: random.rng.next())) }
        xs = xs.filter { $0.isFinite && abs($0) < 3.38e38 }  // beyond: the top neighbour is inf
        xs += [1, 1 + 0x1p-8, 1 + 0x1.8p-7, -(1 + 0x1p-8), 0x1p-126, 0x1p-149, 3.0e38]
        let decoded = try ElementCodec.bf16.decode(ElementCodec.bf16.encode(xs), count: xs.count)
        for (x, y) in zip(xs, decoded) {
            #expect(y.bitPattern == Self.referenceBF16(x).bitPattern, "bf16 of \(x)")
            if x.isNormal {
                #expect(abs(Double(y) - Double(x)) <= Self.bf16Unit * Double(abs(x)), "bf16 bound: \(x) → \(y)")
            } else {
                #expect(abs(Double(y) - Double(x)) <= 0x1p-134)
            }
        }
    }

    @Test func bf16SpecialValues() throws {
        let signalingNaN = Float(bitPattern: 0x7F80_0001)  // truncation alone would make it inf
        let xs: [Float] = [0, -0.0, .infinity, -.infinity, .nan, signalingNaN, .greatestFiniteMagnitude, 1 + 0x1p-8, 1 + 0x1.8p-7, .leastNonzeroMagnitude]
        let y = try ElementCodec.bf16.decode(ElementCodec.bf16.encode(xs), count: xs.count)
        #expect(y[0].bitPattern == 0 && y[1].bitPattern == 0x8000_0000)
        #expect(y[2] == .infinity && y[3] == -.infinity)
        #expect(y[4].isNaN && y[5].isNaN, "every NaN stays NaN")
        #expect(y[6] == .infinity, "FLT_MAX rounds up past the largest bf16")
        #expect(y[7] == 1 && y[8] == 1 + 0x1p-6, "ties to even")
        #expect(y[9] == 0)
    }

    @Test(arguments: [1, 7, 64, 512])
    func int8RoundTripWithinBound(chunk: Int) throws {
        var random = CompressionRandom(#function, salt: UInt64(chunk))
        let codec = ElementCodec.int8(chunk: chunk)
        // Groups of very different scales, and a count that leaves a partial last group.
        let count = 10 * chunk + chunk / 2 + 1
        var xs = [Float]()
        while xs.count < count {
            let scale = pow(10, random.uniform(-30, 30))
            xs += random.gaussians(min(chunk, count - xs.count), scale: scale)
        }
        let bytes = codec.encode(xs)
        #expect(bytes.count == codec.encodedSize(count: count))
        #expect(bytes.count == count + 4 * ((count + chunk - 1) / chunk))
        let decoded = try codec.decode(bytes, count: count)
        for start in stride(from: 0, to: count, by: chunk) {
            let group = start..<min(count, start + chunk)
            let a = Double(largestMagnitude(Array(xs[group])))
            for i in group {
                #expect(abs(Double(decoded[i]) - Double(xs[i])) <= 1.0001 * a / 254, "int8 group at \(start): \(xs[i]) → \(decoded[i]), absmax \(a)")
            }
        }
    }

    @Test func int8SpecialValues() throws {
        let codec = ElementCodec.int8(chunk: 4)
        let xs: [Float] = [0, -0.0, 0, 0,                    // all-zero group
                           1, .nan, 2, 3,                    // NaN poisons its group
                           -.infinity, 1, 1, 1,              // so does inf
                           0x1.16c2p-133, -0x1.a1p-132, 0x1.bep-136, 0,  // subnormal absmax: 1/scale overflows
                           127, -127, 63.5, 0.49]            // exact steps, a tie
        let y = try codec.decode(codec.encode(xs), count: xs.count)
        #expect(y[0..<4].allSatisfy { $0 == 0 })
        #expect(y[4..<12].allSatisfy { $0.isNaN }, "a non-finite value makes its whole group NaN")
        for i in 12..<16 {
            #expect(abs(Double(y[i]) - Double(xs[i])) <= 0x1.a1p-132 / 127, "tiny group: \(xs[i]) → \(y[i])")
        }
        #expect(Array(y[16..<20]) == [127, -127, 64, 0], "scale 1: round to nearest even")
    }

    @Test(arguments: [ElementCodec.float32, .fp16, .bf16, .int8(chunk: 3)])
    func decodeAddAccumulatesAndBadPayloadsAreRejected(codec: ElementCodec) throws {
        var random = CompressionRandom(#function)
        let xs = random.gaussians(50)
        let base = random.gaussians(60)
        let bytes = codec.encode(xs)
        var summed = base
        try codec.decodeAdd(bytes, into: &summed, at: 5, count: 50)
        let decoded = try codec.decode(bytes, count: 50)
        var expected = base
        for i in 0..<50 { expected[i + 5] += decoded[i] }
        #expect(sameBits(summed, expected), "decodeAdd = decode, then add in float32")
        if case .float32 = codec { #expect(sameBits(decoded, xs)) }

        // Wrong sizes are rejected and leave the buffer alone.
        for bad in [Array(bytes.dropLast()), bytes + [0], []] {
            var target = base
            #expect(throws: CompressionError.self) { try codec.decodeAdd(bad, into: &target, at: 5, count: 50) }
            #expect(sameBits(target, base))
        }
        var target = base
        #expect(throws: CompressionError.self) { try codec.decodeAdd(bytes, into: &target, at: 20, count: 50) }
    }

    @Test func int8RejectsImpossibleScales() throws {
        let codec = ElementCodec.int8(chunk: 2)
        let good = codec.encode([1, 2, 3, 4])
        for scale: Float in [-1, -0.0, .infinity, -.infinity] {
            var bad = good
            let bits = scale.bitPattern
            for b in 0..<4 { bad[4 + b] = UInt8(truncatingIfNeeded: bits >> (8 * UInt32(b))) }
            var target: [Float] = [9, 9, 9, 9]
            do {
                try codec.decodeAdd(bad, into: &target, count: 4)
                Issue.record("scale \(scale) accepted")
            } catch {
                #expect(error.code == .malformedPayload)
            }
            #expect(target == [9, 9, 9, 9], "a rejected payload changes nothing")
        }
    }

    @Test func encodingIsDeterministicAndSized() {
        var random = CompressionRandom(#function)
        let xs = random.gaussians(1000)
        for codec in [ElementCodec.float32, .fp16, .bf16, .int8(chunk: 64)] {
            #expect(codec.encode(xs) == codec.encode(xs))
            #expect(codec.encode(xs).count == codec.encodedSize(count: 1000))
            #expect(codec.encode([Float]()).isEmpty)
        }
    }

    // MARK: Ring

    @Test(arguments: [
        (ElementCodec.float32, 3), (.fp16, 3), (.fp16, 4), (.bf16, 3), (.bf16, 4), (.int8(chunk: 64), 3), (.int8(chunk: 64), 4),
    ])
    func ringSumWithinBoundAndBitIdentical(codec: ElementCodec, replicas: Int) throws {
        var random = CompressionRandom(#function, salt: UInt64(replicas))
        let count = 5003
        let inputs = (0..<replicas).map { _ in random.spread(count, top: 1, decades: 4) }
        let (buffers, bytesSent) = try compressedRingSum(inputs, codec: codec, chunkElements: 300)
        for rank in 1..<replicas {
            #expect(sameBits(buffers[rank], buffers[0]), "replica \(rank) differs from replica 0")
        }
        let d = Double(replicas)
        let infinityNorms = inputs.map { Double(largestMagnitude($0)) }.reduce(0, +)
        var worst = 0.0
        for i in 0..<count {
            let exact = inputs.reduce(0.0) { $0 + Double($1[i]) }
            let absSum = inputs.reduce(0.0) { $0 + abs(Double($1[i])) }
            let additions = d * 0x1p-23 * absSum
            let bound: Double = switch codec {
            case .float32: additions
            case .fp16: d * (Self.fp16Unit + 0x1p-23) * absSum * (1 + d * Self.fp16Unit) + d * 0x1p-25
            case .bf16: d * (Self.bf16Unit + 0x1p-23) * absSum * (1 + d * Self.bf16Unit)
            case .int8: 1.0001 * d * infinityNorms / 254 + additions
            }
            let error = abs(Double(buffers[0][i]) - exact)
            worst = max(worst, error / max(bound, .leastNonzeroMagnitude))
            #expect(error <= bound, "element \(i): \(buffers[0][i]) vs exact \(exact), bound \(bound)")
        }
        let predicted = GradientTraffic.ringBytesPerReplica(count: count, codec: codec, replicas: replicas, chunkElements: 300)
        #expect(predicted == bytesSent / replicas, "traffic formula \(predicted) vs counted \(bytesSent / replicas)")
        print("\(codec) × \(replicas): worst error / bound = \(worst)")
    }
}
