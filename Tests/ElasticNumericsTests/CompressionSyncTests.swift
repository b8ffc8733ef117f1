import ElasticCore
import ElasticNumerics
import ElasticTestSupport
import Testing

/// An in-memory ring of `size` replicas: replica r sends to r+1.
private final class MemoryRing: Sendable {
    let boxes: [Mailbox<ExchangeKey, [UInt8]>]
    init(size: Int) { boxes = (0..<size).map { _ in Mailbox() } }

    struct Link: ExchangeLink {
        let ring: MemoryRing
        let rank: Int
        func send(_ key: ExchangeKey, _ bytes: [UInt8]) async throws {
            await ring.boxes[(rank + 1) % ring.boxes.count].deliver(bytes, for: key)
        }
        func receive(_ key: ExchangeKey) async throws -> [UInt8] {
            try await ring.boxes[rank].take(key)
        }
    }
}

/// The stage's gradient exchange over a ring of replicas (every codec): every replica ends
/// with bit-identical gradients (replicas must keep identical weights), the uncompressed
/// exchange is the sum, the casts and int8 stay close to it, and every codec sends fewer bytes.
@Suite struct CompressionSyncTests {
    static let specs = [LayerSpec(fanIn: 96, fanOut: 128, activation: .relu), LayerSpec(fanIn: 128, fanOut: 10, activation: .none)]

    func gradients(replicas: Int, seed: UInt64) -> [[Float]] {
        var rng = SplitMix64(seed: seed)
        let count = Self.specs.reduce(0) { $0 + $1.parameterCount }
        return (0..<replicas).map { _ in (0..<count).map { _ in Float(Double(rng.next() % 20_001) / 10_000 - 1) * 0.01 } }
    }

    func run(_ compression: GradientCompression, replicas: Int, steps: Int, seed: UInt64) async throws -> (results: [[[Float]]], traffic: ExchangeTraffic, exact: [[Float]], compressors: [StageCompressor]) {
        var compressors = (0..<replicas).map { _ in StageCompressor(specs: Self.specs, firstLayer: 0, compression: compression, jobSeed: 42) }
        var results: [[[Float]]] = []
        var exact: [[Float]] = []
        var traffic = ExchangeTraffic()
        for step in 0..<steps {
            let inputs = gradients(replicas: replicas, seed: seed &+ UInt64(step))
            exact.append((0..<inputs[0].count).map { i in inputs.reduce(Float(0)) { $0 + $1[i] } })
            let ring = MemoryRing(size: replicas)
            let outputs = try await withThrowingTaskGroup(of: (Int, [Float], StageCompressor, ExchangeTraffic).self) { group in
                for rank in 0..<replicas {
                    let compressor = compressors[rank]
                    let input = inputs[rank]
                    group.addTask {
                        var state = compressor
                        var buffer = input
                        let moved = try await state.sync(&buffer, step: step, rank: rank, size: replicas, link: MemoryRing.Link(ring: ring, rank: rank))
                        return (rank, buffer, state, moved)
                    }
                }
                var collected = Array(repeating: [Float](), count: replicas)
                for try await (rank, buffer, state, moved) in group {
                    collected[rank] = buffer
                    compressors[rank] = state
                    if rank == 0 { traffic = traffic + moved }
                }
                return collected
            }
            results.append(outputs)
        }
        return (results, traffic, exact, compressors)
    }

    @Test(arguments: [2, 3, 4])
    func everyCodecLeavesEveryReplicaIdentical(replicas: Int) async throws {
        let seed = TestSeed.make("compression sync \(replicas)")
        let codecs: [GradientCompression] = [
            .none, GradientCompression(codec: .fp16, minimumElements: 0), GradientCompression(codec: .bf16, minimumElements: 0),
            GradientCompression(codec: .int8(chunk: 64), minimumElements: 0), GradientCompression(codec: .topk(fraction: 0.05), minimumElements: 0),
            GradientCompression(codec: .topk(fraction: 0.05, values: .float32), minimumElements: 0),
            GradientCompression(codec: .topk(fraction: 0.05, warmupSteps: 1), minimumElements: 0),
            GradientCompression(codec: .topk(fraction: 0.05, warmupSteps: 3, warmupFraction: 0.5), minimumElements: 0),
            GradientCompression(codec: .powersgd(rank: 2, warmupSteps: 1), minimumElements: 0),
        ]
        for compression in codecs {
            let (results, traffic, exact, _) = try await run(compression, replicas: replicas, steps: 4, seed: seed)
            for (step, outputs) in results.enumerated() {
                for rank in 1..<replicas {
                    #expect(outputs[rank].map(\.bitPattern) == outputs[0].map(\.bitPattern), "seed \(seed): \(compression.codec.name), step \(step), replica \(rank) differs from replica 0")
                }
            }
            let error = zip(results[0][0], exact[0]).map { abs($0 - $1) }.max() ?? 0
            switch compression.codec {
            case .none:
                // Uncompressed: the sum up to float32 rounding.
                for (step, outputs) in results.enumerated() {
                    #expect(zip(outputs[0], exact[step]).allSatisfy { abs($0 - $1) <= 1e-6 })
                }
                #expect(traffic.ratio == 1)
            case .fp16, .bf16, .int8:
                #expect(error <= 0.01 * Float(replicas) * 0.02, "seed \(seed): \(compression.codec.name) error \(error)")
                #expect(traffic.ratio > 1.8, "\(compression.codec.name) ratio \(traffic.ratio)")
            case .topk, .powersgd:
                #expect(traffic.ratio > 2, "\(compression.codec.name) ratio \(traffic.ratio)")
            }
        }
    }

    /// Top-k's error feedback across the exchange, with bf16 and float32 values: what the
    /// replicas applied over the steps plus what they still owe (their residuals) is the sum of
    /// every gradient, up to float32 rounding (the bf16 rounding is owed, not lost), and every
    /// replica applied the same bits.
    @Test(arguments: SparseGradient.ValueFormat.allCases)
    func topKSumsPlusResidualsAreTheGradientSums(values: SparseGradient.ValueFormat) async throws {
        let seed = TestSeed.make("top-k error feedback over the ring \(values.name)")
        let replicas = 3
        let steps = 30
        let (results, traffic, exact, compressors) = try await run(GradientCompression(codec: .topk(fraction: 0.02, values: values), minimumElements: 0), replicas: replicas, steps: steps, seed: seed)
        for (step, outputs) in results.enumerated() {
            for rank in 1..<replicas { #expect(sameBits(outputs[rank], outputs[0]), "seed \(seed): step \(step), replica \(rank) differs") }
        }
        let count = exact[0].count
        var applied = [Double](repeating: 0, count: count)
        var truth = [Double](repeating: 0, count: count)
        var scale = [Double](repeating: 0, count: count)
        for step in 0..<steps {
            let inputs = gradients(replicas: replicas, seed: seed &+ UInt64(step))
            for i in 0..<count {
                applied[i] += Double(results[step][0][i])
                truth[i] += Double(exact[step][i])
                for input in inputs { scale[i] += abs(Double(input[i])) }
            }
        }
        for compressor in compressors {
            let owed = compressor.layers.flatMap { $0.tensors.flatMap { $0.topK!.residual } }
            #expect(owed.count == count)
            for i in 0..<count { applied[i] += Double(owed[i]) }
        }
        var worst = 0.0
        for i in 0..<count {
            let error = abs(applied[i] - truth[i])
            worst = max(worst, error / max(scale[i], 1e-30))
            // Each step rounds corrected = g + residual once (|residual| ≤ the gradients it
            // holds) and adds the replicas' values in float32: ≤ (D + 2)·2⁻²⁴·Σ|g| a step. A lost
            // bf16 rounding error would be ~2⁻⁹ of the values sent, far above this.
            #expect(error <= Double(steps * (replicas + 2)) * 0x1p-24 * scale[i] + 1e-12, "seed \(seed): element \(i): \(applied[i]) vs \(truth[i])")
        }
        print("top-k (\(values.name)) over \(replicas) replicas, \(steps) steps: worst |applied + owed − Σg| / scale = \(worst), \(String(format: "%.1f", traffic.ratio))x fewer bytes")
    }
}
