import ElasticCore
import ElasticNumerics
import ElasticStorage
import ElasticTestSupport
import Foundation
import Testing

@Suite struct CheckpointRoundTripTests {
    @Test func byteShuffleLayoutAndInverse() {
        let values = [Float(bitPattern: 0x0403_0201), Float(bitPattern: 0x0807_0605), Float(bitPattern: 0x0C0B_0A09)]
        #expect(ByteShuffle.shuffle(values) == [1, 5, 9, 2, 6, 10, 3, 7, 11, 4, 8, 12])
        #expect(ByteShuffle.unshuffle([1, 5, 9, 2, 6, 10, 3, 7, 11, 4, 8, 12]).map(\.bitPattern) == values.map(\.bitPattern))
        #expect(ByteShuffle.shuffle([]).isEmpty)

        var rng = SplitMix64(seed: TestSeed.make("byteShuffleLayoutAndInverse"))
        for count in [1, 2, 3, 7, 64, 1000, 4097] {
            let random = (0..<count).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }
            let planes = ByteShuffle.shuffle(random)
            #expect(ByteShuffle.unshuffle(planes).map(\.bitPattern) == random.map(\.bitPattern))
            // Plane 3 holds the most significant bytes, in order.
            #expect(Array(planes[(3 * count)...]) == random.map { UInt8($0.bitPattern >> 24) })
        }
    }

    /// Every special value a float can hold, bit for bit.
    static let specialValues: [Float] = [
        0, -0.0, 1, -1, .infinity, -.infinity, .nan, -.nan,
        Float(bitPattern: 0x7FC0_1234),  // quiet NaN with a payload
        Float(bitPattern: 0x7F80_0001),  // signalling NaN
        Float(bitPattern: 0xFFBF_FFFF),  // negative signalling NaN, full payload
        .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .leastNormalMagnitude, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
        Float(bitPattern: 0x0000_0001), Float(bitPattern: 0x807F_FFFF),
    ]

    /// A layer whose tensors cover: Gaussian weights, special values, an all-zero slot, a tiny
    /// bias, and extras (one empty, one 2-D).
    static func awkwardLayer(_ index: Int, rng: inout SplitMix64) -> LayerCheckpoint {
        let fanIn = 33
        let fanOut = 9
        var weight = gaussianFloats(fanIn * fanOut, sigma: 0.05, rng: &rng)
        for (i, value) in specialValues.enumerated() { weight[i * 7] = value }
        let spec = LayerSpec(fanIn: fanIn, fanOut: fanOut, activation: .gelu)
        let state = LayerState(spec: spec, optimizerStep: 1_000_003, tensors: [
            NamedTensor(name: "weight", shape: [fanIn, fanOut], values: weight),
            NamedTensor(name: "bias", shape: [fanOut], values: specialValues.prefix(fanOut).map { $0 }),
            NamedTensor(name: "weight.adam_m", shape: [fanIn * fanOut], values: [Float](repeating: 0, count: fanIn * fanOut)),
            NamedTensor(name: "bias.adam_m", shape: [fanOut], values: gaussianFloats(fanOut, sigma: 1e-3, rng: &rng)),
            NamedTensor(name: "weight.adam_v", shape: [fanIn * fanOut], values: gaussianFloats(fanIn * fanOut, sigma: 1e-6, rng: &rng).map { $0 * $0 }),
            NamedTensor(name: "bias.adam_v", shape: [fanOut], values: [Float](repeating: -0.0, count: fanOut)),
        ])
        return LayerCheckpoint(index: index, state: state, extras: [
            NamedTensor(name: "powersgd.q", shape: [fanOut, 2], values: gaussianFloats(fanOut * 2, sigma: 1, rng: &rng)),
            NamedTensor(name: "empty", shape: [3, 0], values: []),
            NamedTensor(name: "weight.residual", shape: [fanIn * fanOut], values: gaussianFloats(fanIn * fanOut, sigma: 1e-4, rng: &rng)),
        ])
    }

    @Test(arguments: CheckpointWriteOptions.ShufflePolicy.allCases)
    func bitExactAcrossPoliciesAndLevels(shuffle: CheckpointWriteOptions.ShufflePolicy) throws {
        let scratch = try CheckpointScratch("bitExact\(shuffle)")
        defer { scratch.remove() }
        var rng = SplitMix64(seed: TestSeed.make("bitExactAcrossPoliciesAndLevels \(shuffle)"))
        let layers = [Self.awkwardLayer(0, rng: &rng), Self.awkwardLayer(1, rng: &rng), sampleLayer(2, fanIn: 16, fanOut: 300, rng: &rng)]  // 4800 floats: shuffled by .auto
        var step = 0
        for level: Int32 in [-5, 1, 3, 9, 19] {
            for threads in [0, 2] {
                step += 1
                let options = CheckpointWriteOptions(level: level, shuffle: shuffle, compressionThreads: threads)
                try commitModel(scratch.store, step: step, layers: layers, options: options)
                let loaded = try CheckpointReader.load(directory: scratch.store.directory(step: step))
                #expect(loaded.layers == layers, "level \(level), threads \(threads)")
                for (read, written) in zip(loaded.layers, layers) {
                    #expect(read.state.checksum() == written.state.checksum())
                    #expect(read.state.tensors.map(\.name) == written.state.tensors.map(\.name), "tensor order")
                    #expect(read.extras.map(\.name) == written.extras.map(\.name), "extras order")
                }
                let transforms = Set(loaded.manifest.blobs.flatMap(\.allTensors).map(\.transform))
                switch shuffle {
                case .never: #expect(transforms == [.none])
                case .always, .auto:
                    // At negative (fast) levels zstd may not shrink these small tensors at all;
                    // they are then stored raw, without the transform.
                    if level >= 1 { #expect(transforms.contains(.byteplane4), "level \(level)") }
                }
                #expect(loaded.manifest.zstd.level == level)
                #expect(CheckpointReader.verify(directory: loaded.path).isValid)
            }
        }
    }

    @Test func randomizedRoundTrip() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        var rng = SplitMix64(seed: TestSeed.make("randomizedRoundTrip"))
        for step in 0..<12 {
            let count = Int(rng.next() % 4) + 1
            let layers: [LayerCheckpoint] = (0..<count).map { index in
                let fanIn = Int(rng.next() % 70) + 1
                let fanOut = Int(rng.next() % 70) + 1
                let bits = rng.next() % 3
                func values(_ n: Int) -> [Float] {
                    switch bits {
                    case 0: return (0..<n).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }
                    case 1: return gaussianFloats(n, sigma: 0.05, rng: &rng)
                    default: return (0..<n).map { _ in Float(Int(rng.next() % 5)) - 2 }
                    }
                }
                let state = LayerState(spec: LayerSpec(fanIn: fanIn, fanOut: fanOut, activation: Activation.allCases[Int(rng.next() % 3)]),
                                       optimizerStep: Int(rng.next() % 10_000), tensors: [
                    NamedTensor(name: "weight", shape: [fanIn, fanOut], values: values(fanIn * fanOut)),
                    NamedTensor(name: "bias", shape: [fanOut], values: values(fanOut)),
                ])
                return LayerCheckpoint(index: index, state: state, extras: rng.next() % 2 == 0 ? [] : [NamedTensor(name: "e", shape: [fanOut], values: values(fanOut))])
            }
            let options = CheckpointWriteOptions(level: Int32(rng.next() % 6), shuffle: CheckpointWriteOptions.ShufflePolicy.allCases[Int(rng.next() % 3)])
            try commitModel(scratch.store, step: step, layers: layers, options: options)
            let loaded = try CheckpointReader.load(directory: scratch.store.directory(step: step))
            #expect(loaded.layers == layers, "step \(step), \(options)")
        }
    }

    @Test func tinyAndIncompressibleTensorsAreStoredRaw() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        var rng = SplitMix64(seed: TestSeed.make("tinyAndIncompressibleTensorsAreStoredRaw"))
        let fanIn = 1400  // the velocity (4200 floats) is above the .auto threshold
        let fanOut = 3
        let state = LayerState(spec: LayerSpec(fanIn: fanIn, fanOut: fanOut), optimizerStep: 0, tensors: [
            // Random bit patterns: zstd cannot shrink them.
            NamedTensor(name: "weight", shape: [fanIn, fanOut], values: (0..<fanIn * fanOut).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }),
            NamedTensor(name: "bias", shape: [fanOut], values: gaussianFloats(fanOut, sigma: 0.05, rng: &rng)),
            NamedTensor(name: "weight.velocity", shape: [fanIn * fanOut], values: [Float](repeating: 0, count: fanIn * fanOut)),
        ])
        let layer = LayerCheckpoint(index: 0, state: state)
        let part = try scratch.store.writeLayers(step: 1, part: "p", layers: [layer])
        let records = part.blobs[0].tensors
        #expect(records[0].codec == .none && records[0].transform == .none && records[0].storedBytes == records[0].rawBytes)
        #expect(records[1].codec == .none && records[1].storedBytes == 12, "3 floats are stored raw")
        #expect(records[2].codec == .zstd && records[2].transform == .byteplane4 && records[2].storedBytes * 50 < records[2].rawBytes)
        try scratch.store.commit(step: 1, header: sampleHeader(), layerCount: 1)
        #expect(try CheckpointReader.load(directory: scratch.store.directory(step: 1)).layers == [layer])
    }

    @Test func autoShufflesFloatTensorsFromTheThreshold() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        var rng = SplitMix64(seed: 7)
        let threshold = CheckpointWriteOptions.autoShuffleMinimumElements
        // Slowly varying values compress at any size, so the transform is what the policy chose.
        func ramp(_ count: Int) -> [Float] { (0..<count).map { 1 + Float($0 / 16) / 1024 } }
        let layer = sampleLayer(0, fanIn: 4, fanOut: 4, extras: [
            NamedTensor(name: "at", shape: [threshold], values: ramp(threshold)),
            NamedTensor(name: "below", shape: [threshold - 1], values: ramp(threshold - 1)),
        ], rng: &rng)
        let part = try scratch.store.writeLayers(step: 1, part: "p", layers: [layer])
        let extras = part.blobs[0].extras
        #expect(extras.map(\.codec) == [.zstd, .zstd])
        #expect(extras.map(\.transform) == [.byteplane4, .none])
        let never = try scratch.store.writeLayers(step: 2, part: "p", layers: [layer], options: CheckpointWriteOptions(shuffle: .never))
        #expect(never.blobs[0].allTensors.allSatisfy { $0.transform == .none })
        let always = try scratch.store.writeLayers(step: 3, part: "p", layers: [layer], options: CheckpointWriteOptions(shuffle: .always))
        #expect(always.blobs[0].extras.map(\.transform) == [.byteplane4, .byteplane4])
    }

    @Test func loadsASubsetOfLayers() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        let layers = sampleModel(layers: 4, seed: 8)
        try commitModel(scratch.store, step: 9, layers: layers)
        let some = try CheckpointReader.load(directory: scratch.store.directory(step: 9), layers: [1, 3])
        #expect(some.layers == [layers[1], layers[3]])
        let selection = try scratch.store.loadNewestValid(layers: [2])
        #expect(selection.chosen?.layers == [layers[2]])
        expectCheckpointError(.invalidArgument, mentioning: ["layer 4"]) {
            try CheckpointReader.load(directory: scratch.store.directory(step: 9), layers: [4])
        }
    }

    @Test func refusesWhatCannotBeWritten() throws {
        let scratch = try CheckpointScratch()
        defer { scratch.remove() }
        var rng = SplitMix64(seed: 9)
        let good = sampleLayer(0, rng: &rng)
        expectCheckpointError(.invalidArgument, mentioning: ["zstd level 99"]) {
            try scratch.store.writeLayers(step: 1, part: "p", layers: [good], options: CheckpointWriteOptions(level: 99))
        }
        expectCheckpointError(.invalidArgument, mentioning: ["part name"]) {
            try scratch.store.writeLayers(step: 1, part: "../evil", layers: [good])
        }
        expectCheckpointError(.invalidArgument, mentioning: ["step -1"]) {
            try scratch.store.writeLayers(step: -1, part: "p", layers: [good])
        }
        expectCheckpointError(.invalidArgument, mentioning: ["layer 0 twice"]) {
            try scratch.store.writeLayers(step: 1, part: "p", layers: [good, good])
        }
        var duplicate = good
        duplicate.extras = [NamedTensor(name: "bias", shape: [1], values: [0])]
        expectCheckpointError(.invalidArgument, mentioning: ["bias appears twice"]) {
            try scratch.store.writeLayers(step: 1, part: "p", layers: [duplicate])
        }
        var reordered = good
        reordered.state.tensors.swapAt(0, 1)
        expectCheckpointError(.invalidArgument, mentioning: ["must start with weight"]) {
            try scratch.store.writeLayers(step: 1, part: "p", layers: [reordered])
        }
        var badName = good
        badName.extras = [NamedTensor(name: "a/b", shape: [1], values: [0])]
        expectCheckpointError(.invalidArgument, mentioning: ["a/b"]) {
            try scratch.store.writeLayers(step: 1, part: "p", layers: [badName])
        }
        #expect(try scratch.store.incomingSteps().isEmpty, "nothing is created for refused writes")
    }
}
