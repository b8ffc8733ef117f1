import ElasticCore
import ElasticNumerics
import Foundation
import Testing

@Suite("Compression: job settings, per-tensor choice, layer state, traffic")
struct CompressionConfigTests {
    static func parse(_ json: String) throws -> GradientCompression {
        let spec = try JSONDecoder().decode(GradientCompression.Spec.self, from: Data(json.utf8))
        return try GradientCompression(spec: spec)
    }

    @Test func specsParse() throws {
        #expect(try Self.parse(#"{"codec": "none"}"#) == .none)
        #expect(try Self.parse(#"{"codec": "fp16"}"#) == GradientCompression(codec: .fp16))
        #expect(try Self.parse(#"{"codec": "bf16", "minimumElements": 0}"#) == GradientCompression(codec: .bf16, minimumElements: 0))
        #expect(try Self.parse(#"{"codec": "int8"}"#).codec == .int8(chunk: GradientCompression.defaultInt8Chunk))
        #expect(try Self.parse(#"{"codec": "int8", "chunk": 128}"#).codec == .int8(chunk: 128))
        #expect(try Self.parse(#"{"codec": "topk", "fraction": 0.01}"#).codec == .topk(fraction: 0.01, values: .bf16))
        #expect(try Self.parse(#"{"codec": "topk", "fraction": 0.01, "values": "float32"}"#).codec == .topk(fraction: 0.01, values: .float32))
        #expect(try Self.parse(#"{"codec": "topk", "fraction": 0.01, "values": "bf16"}"#).codec == .topk(fraction: 0.01))
        #expect(try Self.parse(#"{"codec": "topk", "fraction": 0.01, "warmupSteps": 50}"#).codec == .topk(fraction: 0.01, warmupSteps: 50))
        #expect(try Self.parse(#"{"codec": "topk", "fraction": 0.01, "warmupSteps": 256, "warmupFraction": 0.25}"#).codec
                == .topk(fraction: 0.01, warmupSteps: 256, warmupFraction: 0.25))
        #expect(try Self.parse(#"{"codec": "powersgd", "rank": 4}"#).codec == .powersgd(rank: 4, warmupSteps: 0))
        #expect(try Self.parse(#"{"codec": "powersgd", "rank": 2, "warmupSteps": 100, "minimumElements": 10000}"#)
                == GradientCompression(codec: .powersgd(rank: 2, warmupSteps: 100), minimumElements: 10000))
        #expect(try Self.parse(#"{"codec": "topk", "fraction": 0.01}"#).minimumElements == 4096)
        // The spec of settings gives the settings back.
        for settings in [GradientCompression.none, .init(codec: .int8(chunk: 64)), .init(codec: .topk(fraction: 0.1), minimumElements: 1),
                         .init(codec: .topk(fraction: 0.02, values: .float32)), .init(codec: .topk(fraction: 0.01, warmupSteps: 9, warmupFraction: 0.3)),
                         .init(codec: .powersgd(rank: 8, warmupSteps: 3))] {
            #expect(try GradientCompression(spec: settings.spec) == settings)
            let json = try JSONEncoder().encode(settings.spec)
            #expect(try GradientCompression(spec: JSONDecoder().decode(GradientCompression.Spec.self, from: json)) == settings)
        }
    }

    @Test func invalidSpecsNameTheField() {
        let cases: [(GradientCompression.Spec, String)] = [
            (.init(codec: "gzip"), "compression.codec: 'gzip' is not one of none, fp16, bf16, int8, topk, powersgd"),
            (.init(codec: "topk"), "compression.fraction: topk needs the fraction of elements to send, e.g. 0.01"),
            (.init(codec: "topk", fraction: 0), "compression.fraction: must be in (0, 1] (got 0.0)"),
            (.init(codec: "topk", fraction: 1.5), "compression.fraction: must be in (0, 1] (got 1.5)"),
            (.init(codec: "topk", fraction: .nan), "compression.fraction: must be in (0, 1] (got nan)"),
            (.init(codec: "powersgd"), "compression.rank: powersgd needs a rank, e.g. 4"),
            (.init(codec: "powersgd", rank: 0), "compression.rank: must be between 1 and 1024 (got 0)"),
            (.init(codec: "powersgd", rank: 4, warmupSteps: -1), "compression.warmupSteps: must not be negative (got -1)"),
            (.init(codec: "int8", chunk: 0), "compression.chunk: must be between 1 and 16777216 elements per scale (got 0)"),
            (.init(codec: "fp16", minimumElements: -5), "compression.minimumElements: must not be negative (got -5)"),
            (.init(codec: "topk", fraction: 0.01, rank: 4), "compression.rank: only the powersgd codec takes it (codec is topk)"),
            (.init(codec: "bf16", chunk: 64), "compression.chunk: only the int8 codec takes it (codec is bf16)"),
            (.init(codec: "none", fraction: 0.5), "compression.fraction: only the topk codec takes it (codec is none)"),
            (.init(codec: "int8", warmupSteps: 3), "compression.warmupSteps: only the powersgd and topk codecs take it (codec is int8)"),
            (.init(codec: "topk", fraction: 0.01, warmupFraction: 0.25), "compression.warmupFraction: needs warmupSteps, the steps over which the fraction falls to 0.01"),
            (.init(codec: "topk", fraction: 0.1, warmupSteps: 10, warmupFraction: 0.05), "compression.warmupFraction: must be in [fraction, 1] (got 0.05)"),
            (.init(codec: "powersgd", rank: 4, warmupSteps: 10, warmupFraction: 0.5), "compression.warmupFraction: only the topk codec takes it (codec is powersgd)"),
            (.init(codec: "topk", fraction: 0.01, values: "fp16"), "compression.values: must be bf16 or float32 (got 'fp16')"),
            (.init(codec: "powersgd", values: "bf16", rank: 4), "compression.values: only the topk codec takes it (codec is powersgd)"),
        ]
        for (spec, message) in cases {
            #expect(spec.problem() == message)
            #expect(throws: CompressionError(.invalidSpec, message)) { try GradientCompression(spec: spec) }
        }
    }

    @Test func exchangeFollowsThresholdAndShape() {
        let power = GradientCompression(codec: .powersgd(rank: 4, warmupSteps: 5))
        #expect(TensorCompressor.exchange(shape: [512, 512], compression: power) == .lowRank(rank: 4, warmupSteps: 5))
        #expect(TensorCompressor.exchange(shape: [512, 10], compression: power) == .lowRank(rank: 4, warmupSteps: 5))
        #expect(TensorCompressor.exchange(shape: [512], compression: power) == .ring(.float32), "bias: below the threshold")
        #expect(TensorCompressor.exchange(shape: [8192], compression: power) == .ring(.float32), "vectors stay uncompressed")
        let allPower = GradientCompression(codec: .powersgd(rank: 4, warmupSteps: 0), minimumElements: 0)
        #expect(TensorCompressor.exchange(shape: [8, 8], compression: allPower) == .ring(.float32), "r·(rows+cols) ≥ rows·cols")
        #expect(TensorCompressor.exchange(shape: [9, 9], compression: allPower) == .lowRank(rank: 4, warmupSteps: 0))

        let int8 = GradientCompression(codec: .int8(chunk: 256))
        #expect(TensorCompressor.exchange(shape: [4095], compression: int8) == .ring(.float32))
        #expect(TensorCompressor.exchange(shape: [4096], compression: int8) == .ring(.int8(chunk: 256)))
        #expect(TensorCompressor.exchange(shape: [64, 64], compression: .init(codec: .fp16)) == .ring(.fp16))
        #expect(TensorCompressor.exchange(shape: [64, 64], compression: .init(codec: .bf16)) == .ring(.bf16))
        #expect(TensorCompressor.exchange(shape: [64, 64], compression: .init(codec: .topk(fraction: 0.01))) == .sparseAllGather(fraction: 0.01, values: .bf16))
        #expect(TensorCompressor.exchange(shape: [64, 64], compression: .none) == .ring(.float32))
        #expect(TensorCompressor.exchange(shape: [0, 64], compression: allPower) == .ring(.float32))
    }

    @Test func layerStateExportsImportsAndResets() throws {
        var random = CompressionRandom(#function)
        let spec = LayerSpec(fanIn: 64, fanOut: 80, activation: .relu)
        let compression = GradientCompression(codec: .powersgd(rank: 2, warmupSteps: 0), minimumElements: 100)
        var layer = LayerCompressor(spec: spec, compression: compression, jobSeed: 42, layer: 3)
        #expect(layer.tensors.map(\.name) == ["weight", "bias"])
        #expect(layer.tensors.map(\.exchange) == [.lowRank(rank: 2, warmupSteps: 0), .ring(.float32)])
        #expect(layer.tensors[0].stateTensorNames == ["weight.residual", "weight.powersgd.q"])
        #expect(layer.tensors[1].stateTensorNames.isEmpty)
        // Every replica derives the same seed; other layers and tensors differ.
        #expect(LayerCompressor(spec: spec, compression: compression, jobSeed: 42, layer: 3) == layer)
        #expect(LayerCompressor.seed(jobSeed: 42, layer: 3, tensor: "weight") != LayerCompressor.seed(jobSeed: 42, layer: 2, tensor: "weight"))
        #expect(LayerCompressor.seed(jobSeed: 42, layer: 3, tensor: "weight") != LayerCompressor.seed(jobSeed: 43, layer: 3, tensor: "weight"))

        for step in 0..<3 {
            guard case .factor(let p) = try layer.tensors[0].powerSGD!.begin(random.gaussians(64 * 80), step: step) else {
                Issue.record("no warm-up configured")
                return
            }
            _ = try layer.tensors[0].powerSGD!.finish(reducedQ: layer.tensors[0].powerSGD!.middle(reducedP: p))
        }
        let state = layer.exportState()
        #expect(state.map(\.name) == ["weight.residual", "weight.powersgd.q"])

        // Into a fresh layer, from a list that also holds the layer's weights.
        var fresh = LayerCompressor(spec: spec, compression: compression, jobSeed: 42, layer: 3)
        try fresh.importState([NamedTensor(name: "weight", shape: [64, 80], values: random.gaussians(5120))] + state)
        #expect(fresh == layer)

        // Missing or misshapen state: a clear error, nothing changed.
        var untouched = LayerCompressor(spec: spec, compression: compression, jobSeed: 42, layer: 3)
        let before = untouched
        do {
            try untouched.importState(Array(state.prefix(1)))
            Issue.record("missing Q accepted")
        } catch {
            #expect(error.code == .stateMismatch && error.message.contains("weight.powersgd.q is missing"))
        }
        var misshapen = state
        misshapen[1] = NamedTensor(name: "weight.powersgd.q", shape: [80, 3], values: [Float](repeating: 0, count: 240))
        #expect(throws: CompressionError.self) { try untouched.importState(misshapen) }
        #expect(untouched == before)

        // A replica that receives the layer from a peer starts without a residual but keeps Q.
        var joiner = fresh
        joiner.resetReplicaLocalState()
        let joined = joiner.exportState()
        #expect(joined[0].values.allSatisfy { $0 == 0 })
        #expect(joined[1] == state[1])
        #expect(state.filter { TensorCompressor.isReplicaLocal(stateTensor: $0.name) }.map(\.name) == ["weight.residual"])
    }

    @Test func topKLayerStateAndRingCodecsHaveNone() throws {
        let spec = LayerSpec(fanIn: 256, fanOut: 512)
        let topk = LayerCompressor(spec: spec, compression: .init(codec: .topk(fraction: 0.01)), jobSeed: 1, layer: 0)
        #expect(topk.exportState().map(\.name) == ["weight.residual"])
        #expect(topk.exportState()[0].shape == [256, 512])
        for codec in [GradientCompression.Codec.none, .fp16, .bf16, .int8(chunk: 512)] {
            var layer = LayerCompressor(spec: spec, compression: .init(codec: codec), jobSeed: 1, layer: 0)
            #expect(layer.exportState().isEmpty)
            try layer.importState([])
        }
    }

    @Test func trafficMatchesTheRingAndTheCodecs() {
        // Counted against the simulation in CompressionCodecTests; here the arithmetic.
        #expect(GradientTraffic.ringBytesPerReplica(count: 1000, codec: .float32, replicas: 1) == 0)
        #expect(GradientTraffic.ringBytesPerReplica(count: 1000, codec: .float32, replicas: 2) == 4000)  // 2·(D−1)/D·4n
        #expect(GradientTraffic.ringBytesPerReplica(count: 1000, codec: .fp16, replicas: 4) == 3000)
        // int8 pays a scale per message chunk: 2 segments of 500, chunks of 300 → 300 + 200 each.
        let int8 = ElementCodec.int8(chunk: 256)
        let perSegment = int8.encodedSize(count: 300) + int8.encodedSize(count: 200)
        #expect(GradientTraffic.ringBytesPerReplica(count: 1000, codec: int8, replicas: 2, chunkElements: 300) == 2 * perSegment)

        let spec = LayerSpec(fanIn: 512, fanOut: 512)
        let none = LayerCompressor(spec: spec, compression: .none, jobSeed: 1, layer: 1).traffic(replicas: 2)
        #expect(none.sentBytes == none.uncompressedSentBytes && none.sendRatio == 1 && none.compressionRatio == 1)
        let bf16 = LayerCompressor(spec: spec, compression: .init(codec: .bf16), jobSeed: 1, layer: 1).traffic(replicas: 2)
        #expect(bf16.encodedBytes == 2 * 512 * 512 + 4 * 512, "the bias crosses as float32")
        let power = LayerCompressor(spec: spec, compression: .init(codec: .powersgd(rank: 4, warmupSteps: 10)), jobSeed: 1, layer: 1)
        let steady = power.traffic(replicas: 2)
        #expect(steady.encodedBytes == 4 * 4 * (512 + 512) + 4 * 512)
        #expect(power.traffic(replicas: 2, step: 3) == none, "warm-up steps cross uncompressed")
        #expect(power.traffic(replicas: 2, step: 10) == steady)
        let topk = LayerCompressor(spec: spec, compression: .init(codec: .topk(fraction: 0.01)), jobSeed: 1, layer: 1).traffic(replicas: 3)
        #expect(topk.sentBytes == 2 * (topk.encodedBytes - 4 * 512) + GradientTraffic.ringBytesPerReplica(count: 512, codec: .float32, replicas: 3))
    }

    @Test func estimatedSparseSizeIsClose() throws {
        var random = CompressionRandom(#function)
        var compressor = TopKCompressor(count: 512 * 512, fraction: 0.01)
        let sparse = compressor.compress(random.gaussians(512 * 512))
        let estimate = SparseGradient.estimatedEncodedSize(count: 512 * 512, nonzeros: compressor.k, valueFormat: .bf16)
        #expect(abs(Double(sparse.encodedSize - estimate)) <= 0.01 * Double(estimate), "estimate \(estimate), actual \(sparse.encodedSize)")
        // Rice codes at 1 %: about 8.6 bits per index, so about 3.1 bytes per entry with bf16 values.
        #expect(sparse.encoded()[0] == 0x13 && Double(sparse.encodedSize) <= 3.15 * Double(compressor.k), "\(sparse.encodedSize) bytes for \(compressor.k) entries")
        for density in [0.001, 0.05, 0.2, 0.5] {
            var other = TopKCompressor(count: 100_000, fraction: density, valueFormat: .float32)
            let picked = other.compress(random.gaussians(100_000))
            let guess = SparseGradient.estimatedEncodedSize(count: 100_000, nonzeros: other.k, valueFormat: .float32)
            #expect(abs(Double(picked.encodedSize - guess)) <= 0.02 * Double(guess), "density \(density): estimate \(guess), actual \(picked.encodedSize)")
        }
    }
}
