import ElasticCore
import ElasticNumerics
import Foundation
import Testing

@Suite("Compression: PowerSGD")
struct CompressionPowerSGDTests {
    /// One step on a single replica (the reductions are the identity).
    static func step(_ c: inout PowerSGDCompressor, _ g: [Float], step: Int) throws -> [Float] {
        switch try c.begin(g, step: step) {
        case .uncompressed: return g
        case .factor(let p):
            let q = try c.middle(reducedP: p)
            return try c.finish(reducedQ: q)
        }
    }

    /// One step on every replica, the sums of P and Q taken by the float32 ring simulation, so
    /// every replica receives the same bits, as over the network.
    static func step(_ replicas: inout [PowerSGDCompressor], _ gradients: [[Float]], step: Int) throws -> [[Float]] {
        let starts = try replicas.indices.map { try replicas[$0].begin(gradients[$0], step: step) }
        if starts.allSatisfy({ $0 == .uncompressed }) {
            return try compressedRingSum(gradients, codec: .float32, chunkElements: 1000).buffers
        }
        let ps = starts.map { start -> [Float] in
            guard case .factor(let p) = start else { fatalError("replicas disagree on warm-up") }
            return p
        }
        let reducedP = try compressedRingSum(ps, codec: .float32, chunkElements: 1000).buffers
        let qs = try replicas.indices.map { try replicas[$0].middle(reducedP: reducedP[$0]) }
        let reducedQ = try compressedRingSum(qs, codec: .float32, chunkElements: 1000).buffers
        return try replicas.indices.map { try replicas[$0].finish(reducedQ: reducedQ[$0]) }
    }

    static func columnsAreOrthonormal(_ p: [Float], rows: Int, rank: Int, nonzero: [Int]) -> Bool {
        for a in 0..<rank {
            for b in 0..<rank {
                var dot = 0.0
                for i in 0..<rows { dot += Double(p[i * rank + a]) * Double(p[i * rank + b]) }
                let expected = a == b && nonzero.contains(a) ? 1.0 : 0.0
                if abs(dot - expected) > 1e-5 { return false }
            }
        }
        return true
    }

    // MARK: Orthogonalization

    @Test func orthogonalizeGivesOrthonormalColumnsSpanningP() {
        var random = CompressionRandom(#function)
        let (rows, rank) = (50, 4)
        let original = random.gaussians(rows * rank)
        var p = original
        PowerSGDCompressor.orthogonalize(&p, rows: rows, rank: rank)
        #expect(Self.columnsAreOrthonormal(p, rows: rows, rank: rank, nonzero: [0, 1, 2, 3]))
        // Every original column lies in the span of P̂: P̂·P̂ᵀ·p = p.
        for c in 0..<rank {
            let column = (0..<rows).map { Double(original[$0 * rank + c]) }
            var projected = [Double](repeating: 0, count: rows)
            for k in 0..<rank {
                let coefficient = (0..<rows).reduce(0.0) { $0 + Double(p[$1 * rank + k]) * column[$1] }
                for i in 0..<rows { projected[i] += coefficient * Double(p[i * rank + k]) }
            }
            #expect(zip(projected, column).allSatisfy { abs($0 - $1) < 1e-5 })
        }
        var again = original
        PowerSGDCompressor.orthogonalize(&again, rows: rows, rank: rank)
        #expect(sameBits(again, p), "deterministic")
    }

    @Test func orthogonalizeZeroesZeroAndDependentColumns() {
        var random = CompressionRandom(#function)
        let (rows, rank) = (30, 4)
        var p = random.gaussians(rows * rank)
        for i in 0..<rows {
            p[i * rank + 1] = 0                                          // a zero column
            p[i * rank + 3] = 2 * p[i * rank + 0] - 0.5 * p[i * rank + 2]  // a dependent one
        }
        PowerSGDCompressor.orthogonalize(&p, rows: rows, rank: rank)
        #expect(!p.contains { $0.isNaN })
        #expect((0..<rows).allSatisfy { p[$0 * rank + 1] == 0 && p[$0 * rank + 3] == 0 })
        #expect(Self.columnsAreOrthonormal(p, rows: rows, rank: rank, nonzero: [0, 2]))

        var zero = [Float](repeating: 0, count: rows * rank)
        PowerSGDCompressor.orthogonalize(&zero, rows: rows, rank: rank)
        #expect(zero.allSatisfy { $0 == 0 })

        var diverged = random.gaussians(rows * rank)
        diverged[5 * rank + 2] = .nan
        PowerSGDCompressor.orthogonalize(&diverged, rows: rows, rank: rank)
        #expect((0..<rows).allSatisfy { diverged[$0 * rank + 2].isNaN }, "a NaN column stays visible")
    }

    // MARK: Exactness

    @Test(arguments: [(64, 48, 2, 4), (64, 48, 4, 4), (100, 30, 1, 2), (32, 32, 3, 3), (20, 200, 2, 5)])
    func oneStepIsExactOnMatricesOfRankAtMostR(rows: Int, cols: Int, matrixRank: Int, rank: Int) throws {
        var random = CompressionRandom(#function, salt: UInt64(rows * 1000 + cols * 10 + matrixRank))
        let m = random.lowRank(rows: rows, cols: cols, rank: matrixRank)
        // A fresh compressor: zero residual and a random Gaussian Q, whose span captures M's
        // row space (generic Q, r ≥ rank M), so P̂·P̂ᵀ·M = M after one power iteration.
        var c = PowerSGDCompressor(rows: rows, cols: cols, rank: rank, seed: random.rng.next())
        let approximation = try Self.step(&c, m, step: 0)
        let scale = Double(largestMagnitude(m))
        let error = zip(approximation, m).reduce(0.0) { max($0, abs(Double($1.0) - Double($1.1))) }
        #expect(error <= 1e-5 * scale, "max |P̂Qᵀ − M| = \(error), max |M| = \(scale)")
        #expect(Double(largestMagnitude(c.residual)) <= 1e-5 * scale)
    }

    @Test func staysExactOnLowRankGradientsWithWarmStart() throws {
        var random = CompressionRandom(#function)
        let (rows, cols, rank) = (48, 40, 3)
        var c = PowerSGDCompressor(rows: rows, cols: cols, rank: rank, seed: 7)
        // Gradients with a fixed row space that drift: the warm-started Q keeps capturing it.
        let basis = random.gaussians(cols * rank)
        for step in 0..<30 {
            let left = random.gaussians(rows * rank)
            let m = product(left, basis, rows: rows, cols: cols, inner: rank)
            let approximation = try Self.step(&c, m, step: step)
            let scale = Double(largestMagnitude(m))
            let error = zip(approximation, m).reduce(0.0) { max($0, abs(Double($1.0) - Double($1.1))) }
            #expect(error <= 1e-4 * scale, "step \(step): error \(error)")
        }
    }

    @Test func zeroGradientDoesNotStallTheWarmStart() throws {
        var random = CompressionRandom(#function)
        let (rows, cols, rank) = (30, 20, 2)
        var c = PowerSGDCompressor(rows: rows, cols: cols, rank: rank, seed: 3)
        let zero = try Self.step(&c, [Float](repeating: 0, count: rows * cols), step: 0)
        #expect(zero.allSatisfy { $0 == 0 })
        #expect(c.q.allSatisfy { $0 == 0 }, "a zero gradient leaves Q zero")
        // The next begin refreshes the zero columns; a low-rank gradient is then exact again.
        let m = random.lowRank(rows: rows, cols: cols, rank: 2)
        let approximation = try Self.step(&c, m, step: 1)
        #expect(zip(approximation, m).allSatisfy { abs($0 - $1) <= 1e-5 * largestMagnitude(m) })
    }

    @Test func divergedGradientIsVisible() throws {
        var random = CompressionRandom(#function)
        var c = PowerSGDCompressor(rows: 20, cols: 10, rank: 2, seed: 3)
        var g = random.gaussians(200)
        g[17] = .nan
        let approximation = try Self.step(&c, g, step: 0)
        #expect(approximation.contains { $0.isNaN })
    }

    // MARK: Error feedback and warm-up

    @Test func errorFeedbackConservesTheGradientSumOver200Steps() throws {
        var random = CompressionRandom(#function)
        let (rows, cols, rank, warmup) = (40, 30, 2, 5)
        var c = PowerSGDCompressor(rows: rows, cols: cols, rank: rank, warmupSteps: warmup, seed: 11)
        let n = rows * cols
        var trueSum = [Double](repeating: 0, count: n)
        var sentSum = [Double](repeating: 0, count: n)
        var bound = [Double](repeating: 0, count: n)
        for step in 0..<200 {
            let g = random.gaussians(n)
            let before = c.residual
            let sent = try Self.step(&c, g, step: step)
            if step < warmup {
                #expect(sameBits(sent, g) && c.residual.allSatisfy { $0 == 0 }, "warm-up sends the gradient, state untouched")
            }
            for i in 0..<n {
                trueSum[i] += Double(g[i])
                sentSum[i] += Double(sent[i])
                // M = g + r rounded once, residual = M − sent rounded once.
                bound[i] += 0x1p-23 * Double(abs(g[i]) + abs(before[i]) + abs(sent[i]) + abs(c.residual[i]))
            }
        }
        var worst = 0.0
        for i in 0..<n {
            let error = abs(sentSum[i] + Double(c.residual[i]) - trueSum[i])
            worst = max(worst, error)
            #expect(error <= bound[i], "element \(i): \(error) > \(bound[i])")
        }
        print("PowerSGD error feedback: worst |Σsent + residual − Σg| = \(worst)")
    }

    @Test func warmupStepsChangeNothing() throws {
        var random = CompressionRandom(#function)
        var c = PowerSGDCompressor(rows: 16, cols: 12, rank: 2, warmupSteps: 3, seed: 5)
        let initial = c
        for step in 0..<3 {
            #expect(try c.begin(random.gaussians(192), step: step) == .uncompressed)
            #expect(c == initial)
        }
        guard case .factor(let p) = try c.begin(random.gaussians(192), step: 3) else {
            Issue.record("step 3 is past the warm-up")
            return
        }
        #expect(p.count == 16 * 2)
        #expect(PowerSGDCompressor(rows: 16, cols: 12, rank: 2, seed: 5).q == PowerSGDCompressor.initialQ(cols: 12, rank: 2, seed: 5))
    }

    @Test func protocolViolationsThrowAndChangeNothing() throws {
        var random = CompressionRandom(#function)
        var c = PowerSGDCompressor(rows: 16, cols: 12, rank: 2, seed: 5)
        let g = random.gaussians(192)
        #expect(throws: CompressionError.self) { _ = try c.middle(reducedP: [Float](repeating: 0, count: 32)) }
        #expect(throws: CompressionError.self) { _ = try c.finish(reducedQ: [Float](repeating: 0, count: 24)) }
        #expect(throws: CompressionError.self) { _ = try c.begin([Float](repeating: 0, count: 191), step: 0) }
        let idle = c
        guard case .factor(let p) = try c.begin(g, step: 0) else { Issue.record("no factor"); return }
        #expect(c.isInProgress && c.residual == idle.residual && c.q == idle.q, "begin changes no state")
        #expect(throws: CompressionError.self) { _ = try c.finish(reducedQ: [Float](repeating: 0, count: 24)) }
        #expect(throws: CompressionError.self) { _ = try c.middle(reducedP: [Float](repeating: 0, count: 31)) }
        let waiting = c
        let q = try c.middle(reducedP: p)
        #expect(throws: CompressionError.self) { _ = try c.middle(reducedP: p) }
        #expect(throws: CompressionError.self) { _ = try c.finish(reducedQ: [Float](repeating: 0, count: 23)) }
        // Abandoning (or the next begin) drops the step: state as before it.
        var abandoned = c
        abandoned.abandon()
        #expect(abandoned == idle)
        var restarted = waiting
        _ = try restarted.begin(g, step: 0)
        #expect(restarted == waiting, "the same begin again gives the same state")
        _ = try c.finish(reducedQ: q)
        #expect(!c.isInProgress)
    }

    // MARK: Replicas

    @Test func replicasAgreeBitwiseAndSumTheirGradients() throws {
        var random = CompressionRandom(#function)
        let (rows, cols, rank, count) = (60, 50, 3, 3)
        var replicas = Array(repeating: PowerSGDCompressor(rows: rows, cols: cols, rank: rank, warmupSteps: 2, seed: 99), count: count)
        var trueSum = [Double](repeating: 0, count: rows * cols)
        var sentSum = [Double](repeating: 0, count: rows * cols)
        // Gradients Lᵣ·Bᵀ with a row space B (rank 2 ≤ r) fixed over steps, as gradients drift
        // slowly: the warm-started Q captures it, so the sum crosses exactly (residuals add up
        // to ~0 even though each replica keeps the part of its own M outside span(P̂)).
        let basis = random.gaussians(cols * 2)
        for step in 0..<25 {
            let gradients = (0..<count).map { _ in product(random.gaussians(rows * 2), basis, rows: rows, cols: cols, inner: 2) }
            let results = try Self.step(&replicas, gradients, step: step)
            for r in 1..<count { #expect(sameBits(results[r], results[0]), "step \(step): replica \(r) differs") }
            for r in 1..<count { #expect(sameBits(replicas[r].q, replicas[0].q), "Q is shared") }
            let sum = (0..<rows * cols).map { i in gradients.reduce(0.0) { $0 + Double($1[i]) } }
            let scale = sum.reduce(0) { max($0, abs($1)) }
            let error = zip(results[0], sum).reduce(0.0) { max($0, abs(Double($1.0) - $1.1)) }
            #expect(error <= 1e-4 * scale, "step \(step): |result − Σg| = \(error)")
            for i in 0..<rows * cols {
                trueSum[i] += sum[i]
                sentSum[i] += Double(results[0][i])
            }
        }
        // Full-rank gradients: not exact, but the sum over replicas of the residuals carries
        // exactly what was not sent.
        for step in 25..<60 {
            let gradients = (0..<count).map { _ in random.gaussians(rows * cols) }
            let results = try Self.step(&replicas, gradients, step: step)
            for r in 1..<count { #expect(sameBits(results[r], results[0]), "step \(step): replica \(r) differs") }
            for i in 0..<rows * cols {
                trueSum[i] += gradients.reduce(0.0) { $0 + Double($1[i]) }
                sentSum[i] += Double(results[0][i])
            }
        }
        // Each residual is a projection's remainder: bounded, not a random walk. If projecting
        // keeps a fraction δ of the energy, ‖e‖ ≤ ‖g‖/(1 − √(1−δ)); with a random span,
        // δ ≈ r/min(rows, cols) = 0.06, so ‖e‖ ≤ 33·‖g‖ (‖g‖ = √(rows·cols) for N(0, 1) entries).
        let norms = replicas.map { $0.residual.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() }
        let ratio = norms.max()! / Double(rows * cols).squareRoot()
        print("PowerSGD replicas: largest ‖residual‖/‖gradient‖ after 35 full-rank steps = \(ratio)")
        #expect(ratio < 33)
        var worst = 0.0
        for i in 0..<rows * cols {
            let owed = replicas.reduce(0.0) { $0 + Double($1.residual[i]) }
            worst = max(worst, abs(sentSum[i] + owed - trueSum[i]))
        }
        #expect(worst <= 1e-3, "Σ sent + Σ residuals − Σ gradients = \(worst)")
    }

    @Test func resultIsTheSumProjectedOnTheOrthogonalizedP() throws {
        var random = CompressionRandom(#function)
        let (rows, cols, rank, count) = (30, 24, 2, 3)
        var replicas = Array(repeating: PowerSGDCompressor(rows: rows, cols: cols, rank: rank, seed: 1), count: count)
        let gradients = (0..<count).map { _ in random.gaussians(rows * cols) }
        let q0 = replicas[0].q
        let results = try Self.step(&replicas, gradients, step: 0)
        // Independently: P = Σ Mᵣ·Q₀, P̂ = orth(P), result = P̂·P̂ᵀ·Σ Mᵣ.
        let sum = (0..<rows * cols).map { i in gradients.reduce(Float(0)) { $0 + $1[i] } }
        var p = [Float](repeating: 0, count: rows * rank)
        for i in 0..<rows {
            for k in 0..<rank { p[i * rank + k] = Float((0..<cols).reduce(0.0) { $0 + Double(sum[i * cols + $1]) * Double(q0[$1 * rank + k]) }) }
        }
        PowerSGDCompressor.orthogonalize(&p, rows: rows, rank: rank)
        for i in 0..<rows {
            for j in 0..<cols {
                var expected = 0.0
                for k in 0..<rank {
                    let coefficient = (0..<rows).reduce(0.0) { $0 + Double(p[$1 * rank + k]) * Double(sum[$1 * cols + j]) }
                    expected += Double(p[i * rank + k]) * coefficient
                }
                #expect(abs(Double(results[0][i * cols + j]) - expected) <= 1e-4, "(\(i), \(j))")
            }
        }
    }

    // MARK: State

    @Test func exportedStateResumesBitIdentically() throws {
        var random = CompressionRandom(#function)
        let compression = GradientCompression(codec: .powersgd(rank: 3, warmupSteps: 2), minimumElements: 0)
        let seed = LayerCompressor.seed(jobSeed: 42, layer: 1, tensor: "weight")
        var original = TensorCompressor(name: "weight", shape: [50, 40], compression: compression, seed: seed)
        #expect(original.exchange == .lowRank(rank: 3, warmupSteps: 2))
        let gradients = (0..<16).map { _ in random.gaussians(2000) }
        for (step, g) in gradients[0..<6].enumerated() { _ = try Self.step(&original.powerSGD!, g, step: step) }
        let state = original.exportState()
        #expect(state.map(\.name) == ["weight.residual", "weight.powersgd.q"])
        #expect(state.map(\.shape) == [[50, 40], [40, 3]])
        #expect(state.map { TensorCompressor.isReplicaLocal(stateTensor: $0.name) } == [true, false])

        var restored = TensorCompressor(name: "weight", shape: [50, 40], compression: compression, seed: seed)
        try restored.importState(state + [NamedTensor(name: "bias", shape: [3], values: [1, 2, 3])])
        #expect(restored == original)
        for (offset, g) in gradients[6...].enumerated() {
            let a = try Self.step(&original.powerSGD!, g, step: 6 + offset)
            let b = try Self.step(&restored.powerSGD!, g, step: 6 + offset)
            #expect(sameBits(a, b), "step \(6 + offset)")
        }
        #expect(restored.exportState() == original.exportState())
    }
}
