import Testing
import ElasticNumerics

@Suite("Layer state, transfer and checksums")
struct StateTests {
    static func trainedLayer(_ optimizer: Optimizer, seed: UInt64) -> Layer {
        var random = TestRandom(seed: seed)
        var layer = random.layer(5, 3, .relu)
        for _ in 0..<3 {
            let (out, cache) = layer.forward(random.matrix(4, 5))
            layer.zeroGrad()
            _ = layer.backward(Matrix(rows: out.rows, cols: out.cols, values: random.floats(out.values.count)), cache: cache)
            layer.applyOptimizer(optimizer, learningRate: 0.01)
        }
        return layer
    }

    @Test(arguments: [Optimizer.w1, .adam(Adam(weightDecay: 0.01))])
    func restoredLayerContinuesBitIdentically(optimizer: Optimizer) throws {
        let original = Self.trainedLayer(optimizer, seed: 201)
        let state = original.state
        #expect(state.tensors.map(\.name).prefix(2) == ["weight", "bias"])
        #expect(state.optimizerStep == 3)
        var copy = try Layer(state: state)
        #expect(copy.state == state)
        #expect(copy.checksum() == original.checksum())

        // Both take the same further step: still bit-identical.
        var a = original
        var random = TestRandom(seed: 202)
        let g = [random.floats(15), random.floats(3)]
        a.gradients = g
        copy.gradients = g
        a.applyOptimizer(optimizer, learningRate: 0.01)
        copy.applyOptimizer(optimizer, learningRate: 0.01)
        #expect(a == copy)
        #expect(a.checksum() == copy.checksum())
        #expect(a.checksum() != original.checksum())
    }

    @Test func checksumSeesEveryBit() throws {
        let layer = Self.trainedLayer(.w1, seed: 203)
        let base = layer.checksum()
        var state = layer.state
        for t in state.tensors.indices {
            var flipped = state
            flipped.tensors[t].values[0] = Float(bitPattern: flipped.tensors[t].values[0].bitPattern ^ 1)
            #expect(flipped.checksum() != base, "a flipped low bit in \(state.tensors[t].name) went unnoticed")
        }
        state.optimizerStep += 1
        #expect(state.checksum() != base)
        // -0 and +0 differ bitwise.
        var zero = layer.state
        zero.tensors[1].values[0] = 0
        var negativeZero = zero
        negativeZero.tensors[1].values[0] = -0.0
        #expect(zero.checksum() != negativeZero.checksum())
        #expect(zero != negativeZero)
        // Known value: FNV-1a of "a" is 0xaf63dc4c8601ec8c.
        var fnv = FNV1a64()
        fnv.combine("a")
        #expect(fnv.value == 0xAF63_DC4C_8601_EC8C)
    }

    /// XXH64 test vectors: "" and "abc" from the specification; for 37 and 100 bytes (which
    /// take the 32-byte stripe path and every tail path), the low 32 bits, as stored by
    /// `zstd --check` in a frame's content checksum.
    @Test func xxh64MatchesKnownValues() {
        func xxh(_ bytes: [UInt8]) -> UInt64 { bytes.withUnsafeBytes { XXH64.hash(bytes: $0) } }
        #expect(xxh([]) == 0xEF46_DB37_51D8_E999)
        #expect(xxh(Array("abc".utf8)) == 0x44BC_2CF5_AD77_0999)
        #expect(xxh((0..<37).map { UInt8(($0 * 7 + 3) % 256) }) & 0xFFFF_FFFF == 0x02F5_A3FD)
        #expect(xxh((0..<100).map { UInt8($0) }) & 0xFFFF_FFFF == 0x3216_6597)
    }

    @Test func mismatchedStatesAreRefused() throws {
        let layer = Self.trainedLayer(.w1, seed: 204)
        var missing = layer.state
        missing.tensors.removeFirst()
        #expect(throws: NumericsError.self) { try Layer(state: missing) }
        var wrongShape = layer.state
        wrongShape.tensors[0] = NamedTensor(name: "weight", shape: [3, 5], values: wrongShape.tensors[0].values)
        #expect(throws: NumericsError.self) { try Layer(state: wrongShape) }
        var unknownSlot = layer.state
        unknownSlot.tensors[2].name = "weight.momentum"
        #expect(throws: NumericsError.self) { try Layer(state: unknownSlot) }
        var other = Layer(spec: LayerSpec(fanIn: 5, fanOut: 4), weight: [Float](repeating: 0, count: 20), bias: [0, 0, 0, 0])
        #expect(throws: NumericsError.self) { try other.restore(layer.state) }
        var same = Layer(spec: layer.spec, weight: [Float](repeating: 0, count: 15), bias: [0, 0, 0])
        try same.restore(layer.state)
        #expect(same.state == layer.state)
        // A fresh layer (no optimizer state yet) round-trips too.
        let fresh = W1.model.initialLayer(4, seed: 1)
        #expect(try Layer(state: fresh.state) == fresh)
    }

    @Test func flatGradientsRoundTripInLayerOrder() {
        var random = TestRandom(seed: 205)
        var stage = Stage(layers: [random.layer(3, 2, .relu), random.layer(2, 4, .gelu)])
        #expect(stage.gradientCount == 3 * 2 + 2 + 2 * 4 + 4)
        let flat = random.floats(stage.gradientCount)
        stage.loadFlatGradients(flat)
        #expect(stage.layers[0].weightGrad == Array(flat[0..<6]))
        #expect(stage.layers[0].biasGrad == Array(flat[6..<8]))
        #expect(stage.layers[1].weightGrad == Array(flat[8..<16]))
        #expect(stage.layers[1].biasGrad == Array(flat[16..<20]))
        #expect(stage.flatGradients() == flat)
        #expect(stage.checksums().count == 2)
        #expect(stage.states.map(\.spec) == stage.layers.map(\.spec))
    }
}
