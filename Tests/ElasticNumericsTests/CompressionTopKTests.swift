import ElasticCore
import ElasticNumerics
import Foundation
import Testing

@Suite("Compression: top-k with error feedback and sparse encoding")
struct CompressionTopKTests {
    /// The k largest |x| by a full sort: magnitude bits descending (NaN above inf), then index.
    static func bruteForceLargest(_ values: [Float], k: Int) -> [UInt32] {
        let order = values.indices.sorted { a, b in
            let (ka, kb) = (values[a].bitPattern & 0x7FFF_FFFF, values[b].bitPattern & 0x7FFF_FFFF)
            return ka != kb ? ka > kb : a < b
        }
        return order.prefix(k).map { UInt32($0) }.sorted()
    }

    @Test func selectedCountIsCeilingOfFraction() {
        let cases: [(Int, Double, Int)] = [
            (100, 0.07, 7), (1000, 0.01, 10), (1001, 0.01, 11), (5, 0.01, 1), (10, 1, 10), (3, 0.5, 2),
            (262_144, 0.01, 2622), (1, 0.001, 1), (0, 0.5, 0),
        ]
        for (n, fraction, k) in cases {
            #expect(TopKCompressor.selectedCount(count: n, fraction: fraction) == k, "k of \(n) at \(fraction)")
        }
    }

    @Test func selectsExactlyTheLargestMagnitudes() {
        var random = CompressionRandom(#function)
        for trial in 0..<300 {
            let n = random.int(1...3000)
            // Few distinct magnitudes, so ties are everywhere; zeros of both signs; sometimes inf/NaN.
            let palette: [Float] = [0, 1e-3, 0.5, 1, 2, 2, 3, 1e20]
            var values = (0..<n).map { _ -> Float in
                let magnitude = trial % 3 == 0 ? Float(random.uniform(0, 1)) : palette[random.int(0...palette.count - 1)]
                return random.rng.next() & 1 == 0 ? magnitude : -magnitude
            }
            if trial % 5 == 0 { values[random.int(0...n - 1)] = .infinity }
            if trial % 7 == 0 { values[random.int(0...n - 1)] = .nan }
            let k = random.int(1...n)
            let selected = values.withUnsafeBufferPointer { TopKCompressor.largest($0, k: k) }
            #expect(selected == Self.bruteForceLargest(values, k: k), "trial \(trial): n \(n), k \(k)")
        }
    }

    @Test func selectsFromAMillionElements() {
        var random = CompressionRandom(#function)
        var values = random.gaussians(1 << 20)
        for i in stride(from: 0, to: values.count, by: 97) { values[i] = 0.5 }  // a large tie group
        for k in [1, 10_486, 1 << 19] {
            let selected = values.withUnsafeBufferPointer { TopKCompressor.largest($0, k: k) }
            #expect(selected == Self.bruteForceLargest(values, k: k), "k \(k)")
        }
    }

    @Test func compressSendsCorrectedEntriesAndKeepsTheRest() {
        var random = CompressionRandom(#function)
        var compressor = TopKCompressor(count: 1000, fraction: 0.05, valueFormat: .float32)
        #expect(compressor.k == 50)
        for _ in 0..<5 {
            let g = random.gaussians(1000)
            let before = compressor.residual
            let corrected = zip(g, before).map { $0 + $1 }
            let sparse = compressor.compress(g)
            #expect(sparse.count == 1000)
            #expect(sparse.indices == Self.bruteForceLargest(corrected, k: 50))
            #expect(sameBits(sparse.values, sparse.indices.map { corrected[Int($0)] }))
            var expectedResidual = corrected
            for index in sparse.indices { expectedResidual[Int(index)] = 0 }
            #expect(sameBits(compressor.residual, expectedResidual))
        }
    }

    /// bf16 values: the same selection (from the float32 corrected values), each sent value
    /// corrected rounded to nearest even (within 2⁻⁸ relative), and the residual keeps exactly
    /// what the rounding left out, so sent + residual = corrected bit for bit.
    @Test func bf16ValuesKeepTheirRoundingInTheResidual() throws {
        var random = CompressionRandom(#function)
        var compressor = TopKCompressor(count: 3000, fraction: 0.02, valueFormat: .bf16)
        #expect(compressor.k == 60)
        for step in 0..<20 {
            let g = random.spread(3000, top: 1, decades: 6)
            let before = compressor.residual
            let corrected = zip(g, before).map { $0 + $1 }
            let sparse = compressor.compress(g)
            #expect(sparse.valueFormat == .bf16)
            #expect(sparse.indices == Self.bruteForceLargest(corrected, k: 60), "step \(step): exact k, from the float32 values")
            for (index, sent) in zip(sparse.indices, sparse.values) {
                let c = corrected[Int(index)]
                let r = compressor.residual[Int(index)]
                #expect(sent.bitPattern & 0xFFFF == 0, "a bf16 value")
                #expect(abs(sent - c) <= 0x1p-8 * abs(c), "step \(step): \(c) sent as \(sent)")
                #expect(sent + r == c && c - sent == r, "step \(step): sent \(sent) + residual \(r) is corrected \(c) exactly")
                #expect(abs(r) <= 0x1p-8 * abs(c))
            }
            var unsent = corrected
            for index in sparse.indices { unsent[Int(index)] = compressor.residual[Int(index)] }
            #expect(sameBits(compressor.residual, unsent), "the unselected entries stay as they were")
            let bytes = sparse.encoded()
            #expect(try SparseGradient(decoding: bytes, count: 3000, nonzeros: 60, valueFormat: .bf16) == sparse)
            #expect(bytes.count == sparse.encodedSize && bytes.count < 1 + 2 + 1 + 60 * (2 + 2) + 1, "\(bytes.count) bytes")
        }
    }

    /// Rounding to bf16 never turns a finite value infinite (the residual would be infinite):
    /// values above bf16's largest round down to it; inf, NaN and zeros cross as they are.
    @Test func bf16QuantizationOfSpecialValues() {
        let format = SparseGradient.ValueFormat.bf16
        let largest = Float(bitPattern: 0x7F7F_0000)
        #expect(format.quantized(.greatestFiniteMagnitude) == largest)
        #expect(format.quantized(-.greatestFiniteMagnitude) == -largest)
        #expect(format.quantized(.infinity) == .infinity && format.quantized(-.infinity) == -.infinity)
        #expect(format.quantized(.nan).isNaN)
        #expect(format.quantized(-0.0).bitPattern == (-0.0 as Float).bitPattern)
        #expect(format.quantized(1 + 0x1p-8) == 1, "a tie rounds to even")
        #expect(format.quantized(1 + 0x1p-8 + 0x1p-20) == 1 + 0x1p-7)
        #expect(format.quantized(.leastNonzeroMagnitude) == 0, "below bf16's subnormals: 0, kept in the residual")
        for x: Float in [.greatestFiniteMagnitude, 3.3e38, Float.leastNormalMagnitude.nextDown, 0x1p-133, 0.1, -7.77] {
            let q = format.quantized(x)
            #expect((x - q).isFinite && q + (x - q) == x, "\(x)")
        }
        var compressor = TopKCompressor(count: 4, fraction: 0.5, valueFormat: .bf16)
        let sparse = compressor.compress([.greatestFiniteMagnitude, 1, -.infinity, 2])
        #expect(sparse.indices == [0, 2] && sparse.values == [largest, -.infinity])
        #expect(compressor.residual[0] == .greatestFiniteMagnitude - largest && compressor.residual[2] == 0)
    }

    /// Warm-up: uncompressed steps leave the residual at zero and advance only the velocity of
    /// momentum correction; a warm-up fraction falls exponentially to the fraction.
    @Test func warmupCrossesUncompressedOrFallsToTheFraction() {
        var random = CompressionRandom(#function)
        var dense = TopKCompressor(count: 500, fraction: 0.02, momentum: 0.9, warmupSteps: 3)
        var velocity = [Float](repeating: 0, count: 500)
        for step in 0..<3 {
            #expect(dense.isUncompressed(step: step))
            let g = random.gaussians(500)
            g.withUnsafeBufferPointer { dense.skip($0) }
            for i in 0..<500 { velocity[i] = 0.9 * velocity[i] + g[i] }
            #expect(sameBits(dense.velocity, velocity) && dense.residual.allSatisfy { $0 == 0 })
        }
        #expect(!dense.isUncompressed(step: 3) && dense.selected(step: 3) == 10)
        let g = random.gaussians(500)
        let sparse = dense.compress(g, step: 3)
        let corrected = (0..<500).map { 0.9 * velocity[$0] + g[$0] }
        #expect(sparse.indices == Self.bruteForceLargest(corrected, k: 10), "the first compressed step selects from the whole velocity")

        let schedule = TopKCompressor(count: 10_000, fraction: 0.01, warmupSteps: 4, warmupFraction: 0.16)
        #expect((0..<6).map { schedule.selected(step: $0) } == [1600, 800, 400, 200, 100, 100])
        #expect(!schedule.isUncompressed(step: 0))
        var scheduled = schedule
        #expect(scheduled.compress(random.gaussians(10_000), step: 1).indices.count == 800)
    }

    @Test func nanIsSentNotKept() {
        var compressor = TopKCompressor(count: 10, fraction: 0.1)
        var g = [Float](repeating: 1, count: 10)
        g[7] = .nan
        g[3] = .infinity
        let sparse = compressor.compress(g)
        #expect(sparse.indices == [7] && sparse.values[0].isNaN)
        #expect(compressor.residual.allSatisfy { !$0.isNaN })
    }

    @Test(arguments: SparseGradient.ValueFormat.allCases)
    func errorFeedbackConservesTheGradientSumOver200Steps(values: SparseGradient.ValueFormat) {
        var random = CompressionRandom(#function)
        let n = 4000
        var compressor = TopKCompressor(count: n, fraction: 0.01, valueFormat: values)
        var trueSum = [Double](repeating: 0, count: n)
        var sentSum = [Double](repeating: 0, count: n)
        var roundingBound = [Double](repeating: 0, count: n)
        for _ in 0..<200 {
            let g = random.spread(n, top: 1, decades: 3)
            let sparse = compressor.compress(g)
            #expect(sparse.indices.count == 40)
            for i in 0..<n { trueSum[i] += Double(g[i]) }
            let sent = sparse.densified()
            for i in 0..<n {
                sentSum[i] += Double(sent[i])
                // corrected = sent + residual exactly (disjoint supports, or the bf16 rounding
                // error in the residual, exact); corrected was rounded once.
                roundingBound[i] += 0x1p-24 * Double(abs(sent[i]) + abs(compressor.residual[i]))
            }
        }
        var worst = 0.0
        for i in 0..<n {
            let error = abs(sentSum[i] + Double(compressor.residual[i]) - trueSum[i])
            #expect(error <= roundingBound[i] * 1.01 + 1e-12, "element \(i)")
            worst = max(worst, error)
        }
        print("top-k error feedback (\(values.name) values): worst |Σsent + residual − Σg| = \(worst)")
    }

    // MARK: Sparse wire format

    @Test func sparseEncodingRoundTripsCanonically() throws {
        var random = CompressionRandom(#function)
        for trial in 0..<200 {
            let n = random.int(1...5000)
            let density = [0.001, 0.01, 0.1, 0.3, 1.0][trial % 5]
            let k = max(1, Int(Double(n) * density))
            var chosen = Set<UInt32>()
            while chosen.count < k { chosen.insert(UInt32(random.int(0...n - 1))) }
            let indices = chosen.sorted()
            let format = SparseGradient.ValueFormat.allCases[trial % 2]
            let values = random.gaussians(k).map { format.quantized($0) }
            let sparse = try SparseGradient(count: n, indices: indices, values: values, valueFormat: format)
            let bytes = sparse.encoded()
            #expect(bytes.count == sparse.encodedSize)
            #expect(bytes[0] >> 4 == format.rawValue)
            let decoded = try SparseGradient(decoding: bytes, count: n, nonzeros: k, valueFormat: format)
            #expect(decoded == sparse)
            #expect(decoded.encoded() == bytes)
            // Compact: never more than a bitmap plus the values (plus a few header bytes), nor
            // than the gap varints plus the values.
            #expect(bytes.count <= (n + 7) / 8 + format.bytes * k + 11)
            let varintBytes = indices.enumerated().reduce(0) { sum, entry in
                let gap = Int(entry.element) - (entry.offset == 0 ? 0 : Int(indices[entry.offset - 1]) + 1)
                return sum + max(1, (64 - UInt64(gap).leadingZeroBitCount + 6) / 7)
            }
            #expect(bytes.count <= varintBytes + format.bytes * k + 11)
            if density == 1 { #expect(bytes[0] & 0x0F == 2, "dense selections use the bitmap") }
            // At 30 % a Rice code (b = 1, ~3.2 bits per index) is smaller than the bitmap.
            if density == 0.3 && n >= 100 { #expect(bytes[0] & 0x0F != 1, "no varints for dense selections") }
            if density == 0.01 && n >= 2000 { #expect(bytes[0] & 0x0F == 3, "sparse selections use Rice codes") }
        }
        #expect(throws: CompressionError.self) { try SparseGradient(count: 10, indices: [1], values: [0.1], valueFormat: .bf16) }
        let empty = try SparseGradient(count: 7, indices: [], values: [])
        #expect(try SparseGradient(decoding: empty.encoded(), count: 7) == empty)
        let last = try SparseGradient(count: 1 << 20, indices: [0, (1 << 20) - 1], values: [1, -1])
        #expect(try SparseGradient(decoding: last.encoded(), count: 1 << 20) == last)
    }

    @Test func sparseGradientInitRejectsBadIndices() {
        #expect(throws: CompressionError.self) { try SparseGradient(count: 10, indices: [3, 3], values: [1, 2]) }
        #expect(throws: CompressionError.self) { try SparseGradient(count: 10, indices: [4, 3], values: [1, 2]) }
        #expect(throws: CompressionError.self) { try SparseGradient(count: 10, indices: [10], values: [1]) }
        #expect(throws: CompressionError.self) { try SparseGradient(count: 10, indices: [1], values: []) }
        #expect(throws: CompressionError.self) { try SparseGradient(count: -1, indices: [], values: []) }
    }

    @Test func malformedSparseBytesAreRejected() throws {
        let value: [UInt8] = [0, 0, 0x80, 0x3F]  // 1.0
        let half: [UInt8] = [0x80, 0x3F]  // 1.0 in bf16
        let cases: [(String, [UInt8], Int, Int?)] = [
            ("empty", [], 10, nil),
            ("unknown format", [4, 10, 0], 10, nil),
            ("unknown value format", [0x21, 10, 1, 3] + value, 10, nil),
            ("other tensor size", [1, 11, 0], 10, nil),
            ("more entries than elements", [1, 10, 11] + Array(repeating: 0, count: 11 * 5), 10, nil),
            ("unexpected k", [1, 10, 1, 0] + value, 10, 2),
            ("truncated varint", [1, 0x80], 10, nil),
            ("overlong varint", [1, 0x8A, 0x00, 0], 10, nil),
            ("six-byte varint", [1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], 10, nil),
            ("varint above 32 bits", [1, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0], 10, nil),
            ("index out of range", [1, 10, 1, 10] + value, 10, nil),
            ("gap beyond the end", [1, 10, 2, 5, 4] + value + value, 10, nil),
            ("missing values", [1, 10, 1, 3, 0, 0], 10, nil),
            ("trailing byte", [1, 10, 1, 3] + value + [0], 10, nil),
            ("allocation bomb", [1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F], Int(UInt32.max), nil),
            ("bitmap padding set", [2, 10, 1, 0, 0b0000_0100] + value, 10, nil),
            ("bitmap count too low", [2, 10, 2, 0b0000_0001, 0] + value + value, 10, nil),
            ("bitmap count too high", [2, 10, 1, 0b0000_0011, 0] + value, 10, nil),
            ("truncated bitmap", [2, 10, 0, 0], 10, nil),
            ("bitmap where gaps are smaller", [2, 10, 1, 0, 0b0000_0010] + value, 10, nil),
            ("bf16 values cut short", [0x11, 10, 1, 3, 0x80], 10, nil),
            ("bf16 trailing byte", [0x11, 10, 1, 3] + half + [0], 10, nil),
            // 1000 elements (varint E8 07).
            ("Rice parameter above 31", [3, 0xE8, 0x07, 2, 32, 0, 0, 0] + value + value, 1000, nil),
            ("Rice code cut short", [3, 0xE8, 0x07, 2, 6, 0xFF] + value + value, 1000, nil),
            // b = 9: unary 1 (bits 1, 0), then 511 in 9 bits: index 1023.
            ("Rice index beyond the tensor", [3, 0xE8, 0x07, 1, 9, 0xFD, 0x07] + value, 1000, nil),
            ("Rice padding set", [3, 0xE8, 0x07, 3, 6, 0x87, 0x1C, 0x72, 0xC8] + value + value + value, 1000, nil),
            // Gaps of 200: 2 varint bytes each, 9-bit Rice codes.
            ("gaps where Rice is smaller", [1, 0xE8, 0x07, 3, 0xC8, 0x01, 0xC8, 0x01, 0xC8, 0x01] + value + value + value, 1000, nil),
        ]
        for (name, bytes, count, nonzeros) in cases {
            do {
                _ = try SparseGradient(decoding: bytes, count: count, nonzeros: nonzeros)
                Issue.record("\(name): accepted")
            } catch {
                #expect(error.code == .malformedPayload, "\(name)")
            }
        }
        // The well-formed neighbours of those cases decode.
        #expect(try SparseGradient(decoding: [1, 10, 1, 3] + value, count: 10).indices == [3])
        #expect(try SparseGradient(decoding: [0x11, 10, 1, 3] + half, count: 10).values == [1])
        #expect(try SparseGradient(decoding: [2, 10, 3, 0b0000_0011, 0b0000_0010] + value + value + value, count: 10).indices == [0, 1, 9])
        let rice = try SparseGradient(count: 1000, indices: [200, 401, 602], values: [1, 1, 1])
        #expect(rice.encoded() == [3, 0xE8, 0x07, 3, 6, 0x87, 0x1C, 0x72, 0x08] + value + value + value, "Rice (b = 6) for three gaps of 200")
        #expect(try SparseGradient(decoding: rice.encoded(), count: 1000) == rice)
    }

    @Test func mutatedSparseBytesNeverCrashAndDecodeCanonically() throws {
        var random = CompressionRandom(#function)
        var accepted = 0
        for trial in 0..<3000 {
            let n = random.int(1...300)
            let k = random.int(0...min(n, trial % 2 == 0 ? 5 : n))
            var chosen = Set<UInt32>()
            while chosen.count < k { chosen.insert(UInt32(random.int(0...n - 1))) }
            let format = SparseGradient.ValueFormat.allCases[trial % 2]
            var bytes = try SparseGradient(count: n, indices: chosen.sorted(), values: random.gaussians(k).map { format.quantized($0) }, valueFormat: format).encoded()
            switch random.int(0...3) {
            case 0: bytes[random.int(0...bytes.count - 1)] ^= UInt8(1 << random.int(0...7))
            case 1: bytes.removeLast(random.int(1...bytes.count))
            case 2: bytes.insert(UInt8(random.int(0...255)), at: random.int(0...bytes.count))
            default: bytes[random.int(0...bytes.count - 1)] = UInt8(random.int(0...255))
            }
            if let decoded = try? SparseGradient(decoding: bytes, count: n) {
                accepted += 1
                #expect(decoded.encoded() == bytes, "an accepted payload is the canonical encoding of what it decodes to")
                #expect(decoded.indices.allSatisfy { Int($0) < n })
            }
        }
        print("sparse fuzz: \(accepted) of 3000 mutated payloads still well-formed")
    }

    // MARK: Replicas

    @Test func allGatherGivesTheSumOnEveryReplicaBitIdentically() throws {
        var random = CompressionRandom(#function)
        let (replicas, n) = (4, 6000)
        var compressors = Array(repeating: TopKCompressor(count: n, fraction: 0.02), count: replicas)
        for step in 0..<20 {
            let gradients = (0..<replicas).map { _ in random.gaussians(n, scale: 0.01) }
            let sparse = (0..<replicas).map { compressors[$0].compress(gradients[$0]) }
            let wire = sparse.map { $0.encoded() }
            // Each replica decodes every replica's bytes (its own too) and sums in replica order.
            let results = try (0..<replicas).map { _ in
                SparseGradient.sum(try wire.map { try SparseGradient(decoding: $0, count: n, nonzeros: compressors[0].k) }, count: n)
            }
            for rank in 1..<replicas { #expect(sameBits(results[rank], results[0]), "step \(step): replica \(rank) differs") }
            let dense = sparse.map { $0.densified() }
            for i in 0..<n {
                let exact = dense.reduce(0.0) { $0 + Double($1[i]) }
                let magnitude = dense.reduce(0.0) { $0 + abs(Double($1[i])) }
                #expect(abs(Double(results[0][i]) - exact) <= Double(replicas) * 0x1p-24 * magnitude)
            }
        }
    }

    @Test func exportedStateResumesBitIdentically() throws {
        var random = CompressionRandom(#function)
        let compression = GradientCompression(codec: .topk(fraction: 0.01), minimumElements: 0)
        var original = TensorCompressor(name: "weight", shape: [64, 80], compression: compression, seed: 1)
        let gradients = (0..<15).map { _ in random.gaussians(64 * 80) }
        for g in gradients[0..<5] { _ = original.topK!.compress(g) }
        let state = original.exportState()
        #expect(state.map(\.name) == ["weight.residual"] && state[0].shape == [64, 80])
        var restored = TensorCompressor(name: "weight", shape: [64, 80], compression: compression, seed: 1)
        try restored.importState(state)
        #expect(restored == original)
        for g in gradients[5...] {
            let a = original.topK!.compress(g)
            let b = restored.topK!.compress(g)
            #expect(a == b && a.encoded() == b.encoded())
        }
        #expect(restored.exportState() == original.exportState())
    }
}
