// Checkpoint benchmark: zstd ratio and speed per level with and without the byte-plane shuffle,
// on Gaussian weights and on W1 layers trained with SGD momentum and with Adam; shuffle and
// checksum speeds; end-to-end write/commit/load. Run with bench/checkpoint/run.sh (release
// build); see docs/checkpoint-format.md. `quick` as the first argument skips the slow levels.
import ElasticCore
import ElasticNumerics
import ElasticStorage
import Foundation

let quick = CommandLine.arguments.dropFirst().first == "quick"

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}

/// Best-of timing: repeats until 0.3 s have passed (at least 3 runs) and keeps the fastest.
func best(_ body: () -> Void) -> Double {
    let clock = ContinuousClock()
    var fastest = Double.infinity
    var total = 0.0
    var runs = 0
    while runs < 3 || total < 0.3 {
        let elapsed = seconds(clock.measure(body))
        fastest = min(fastest, elapsed)
        total += elapsed
        runs += 1
    }
    return fastest
}

func gaussian(_ count: Int, sigma: Double, rng: inout SplitMix64) -> [Float] {
    var values = [Float](repeating: 0, count: count)
    var i = 0
    while i < count {
        let u1 = max(rng.uniform(), 1e-300)
        let u2 = rng.uniform()
        let r = (-2 * log(u1)).squareRoot() * sigma
        values[i] = Float(r * cos(2 * .pi * u2))
        if i + 1 < count { values[i + 1] = Float(r * sin(2 * .pi * u2)) }
        i += 2
    }
    return values
}

/// W1's model trained for `steps` steps of batch 256 on W1 data.
func trainW1(_ optimizer: Optimizer, learningRate: Float, steps: Int, data: LabelledSamples) -> Stage {
    var stage = Stage(layers: W1.initialLayers())
    let batch = W1.batchSize
    let features = W1.features
    for step in 0..<steps {
        let rows = (step * batch)..<((step + 1) * batch)
        let x = Matrix(rows: batch, cols: features, values: Array(data.features[(rows.lowerBound * features)..<(rows.upperBound * features)]))
        let (logits, cache) = stage.forward(x)
        guard let loss = try? SoftmaxCrossEntropy.evaluate(logits: logits, labels: Array(data.labels[rows]), normalizer: batch) else {
            fatalError("loss failed")
        }
        stage.accumulateGradients(loss.dLogits, cache: cache)
        stage.applyOptimizer(optimizer, learningRate: learningRate)
        stage.zeroGrad()
    }
    return stage
}

func stored(_ values: [Float], level: Int32, shuffle: Bool) -> [UInt8] {
    guard let compressor = try? Zstd.Compressor(level: level) else { fatalError("zstd level \(level)") }
    if shuffle {
        let planes = ByteShuffle.shuffle(values)
        return (try? planes.withUnsafeBytes { try compressor.compress($0) }) ?? []
    }
    return (try? values.withUnsafeBytes { try compressor.compress($0) }) ?? []
}

func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
func lpad(_ s: String, _ width: Int) -> String { s.count >= width ? s : String(repeating: " ", count: width - s.count) + s }
func fmt(_ x: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", x) }

print("libzstd \(Zstd.libraryVersion)")
let level = CheckpointWriteOptions.defaultLevel
let trainSteps = 200
let data = W1Dataset.generate(seed: W1.seed, range: 0..<(trainSteps * W1.batchSize))
let clock = ContinuousClock()
var start = clock.now
let sgd = trainW1(.sgd(SGD(momentum: 0.9)), learningRate: 0.05, steps: trainSteps, data: data)
let sgdTime = seconds(clock.now - start)
start = clock.now
let adam = trainW1(.adam(Adam()), learningRate: 1e-3, steps: trainSteps, data: data)
let adamTime = seconds(clock.now - start)
print("trained W1 for \(trainSteps) steps: SGD \(fmt(sgdTime, 1)) s, Adam \(fmt(adamTime, 1)) s")

var rng = SplitMix64(seed: 0x5EED)
let l1sgd = sgd.layers[1].state
let l1adam = adam.layers[1].state
let cases: [(String, [Float])] = [
    ("gaussian sd 0.05, 512x512", gaussian(512 * 512, sigma: 0.05, rng: &rng)),
    ("W1 L1 weight, SGD 200 steps", l1sgd.tensors[0].values),
    ("W1 L1 weight.velocity (SGD)", l1sgd.tensors[2].values),
    ("W1 L1 weight, Adam 200 steps", l1adam.tensors[0].values),
    ("W1 L1 weight.adam_m", l1adam.tensors[2].values),
    ("W1 L1 weight.adam_v", l1adam.tensors[3].values),
]
let levels: [Int32] = quick ? [1, 3, 9] : [-5, -1, 1, 3, 6, 9, 12, 19]

print("\n## Ratio (raw/stored) and speed (MB/s of raw bytes, best of >= 3 runs; encode = shuffle + compress, decode = decompress + unshuffle)")
print("| tensor | level | ratio none | ratio byteplane4 | encode MB/s none | encode MB/s shuffled | decode MB/s none | decode MB/s shuffled |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for (label, values) in cases {
    let raw = Double(values.count * 4)
    for level in levels {
        var row = "| \(label) | \(level) |"
        var ratios: [String] = []
        var encode: [String] = []
        var decode: [String] = []
        for shuffle in [false, true] {
            let packed = stored(values, level: level, shuffle: shuffle)
            ratios.append(fmt(raw / Double(packed.count), 3))
            guard let compressor = try? Zstd.Compressor(level: level), let decompressor = try? Zstd.Decompressor() else { fatalError("zstd") }
            let te = best {
                if shuffle {
                    let planes = ByteShuffle.shuffle(values)
                    _ = try? planes.withUnsafeBytes { try compressor.compress($0) }
                } else {
                    _ = try? values.withUnsafeBytes { try compressor.compress($0) }
                }
            }
            var out = [UInt8](repeating: 0, count: values.count * 4)
            let td = best {
                packed.withUnsafeBytes { source in
                    out.withUnsafeMutableBytes { try? decompressor.decompress(source, into: $0) }
                }
                if shuffle { _ = ByteShuffle.unshuffle(out) }
            }
            encode.append(fmt(raw / te / 1e6, 0))
            decode.append(fmt(raw / td / 1e6, 0))
        }
        row += " \(ratios[0]) | \(ratios[1]) | \(encode[0]) | \(encode[1]) | \(decode[0]) | \(decode[1]) |"
        print(row)
    }
}

print("\n## Small tensors: stored bytes at level \(level) (raw when zstd does not shrink it)")
print("| floats | raw | gaussian none | gaussian byteplane4 | trained weight none | trained weight byteplane4 |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
let trainedWeight = l1sgd.tensors[0].values
for count in [16, 64, 128, 256, 512, 1024, 2048, 4096, 16384, 65536] {
    let g = gaussian(count, sigma: 0.05, rng: &rng)
    let b = Array(trainedWeight.prefix(count))
    func size(_ v: [Float], _ s: Bool) -> Int { min(stored(v, level: level, shuffle: s).count, v.count * 4) }
    print("| \(count) | \(count * 4) | \(size(g, false)) | \(size(g, true)) | \(size(b, false)) | \(size(b, true)) |")
}

print("\n## Building blocks on 16 MiB (GB/s)")
let big = gaussian(4 << 20, sigma: 0.05, rng: &rng)
var planes = [UInt8](repeating: 0, count: big.count * 4)
let tShuffle = best {
    big.withUnsafeBufferPointer { f in f.withMemoryRebound(to: UInt32.self) { w in planes.withUnsafeMutableBytes { ByteShuffle.shuffle(w, into: $0) } } }
}
var back = [Float](repeating: 0, count: big.count)
let tUnshuffle = best {
    planes.withUnsafeBytes { p in back.withUnsafeMutableBufferPointer { f in f.withMemoryRebound(to: UInt32.self) { ByteShuffle.unshuffle(p, into: $0) } } }
}
let tHash = best { _ = XXH64.hash(big) }
let bytes16 = Double(big.count * 4)
print("byte shuffle \(fmt(bytes16 / tShuffle / 1e9)) GB/s, unshuffle \(fmt(bytes16 / tUnshuffle / 1e9)) GB/s, XXH64 \(fmt(bytes16 / tHash / 1e9)) GB/s")
let huge = gaussian(16 << 20, sigma: 0.05, rng: &rng)
let hugePlanes = ByteShuffle.shuffle(huge)
print("\n## zstd worker threads, level \(level), shuffled 64 MiB gaussian (MB/s)")
for workers: Int32 in [0, 1, 2] {
    guard let compressor = try? Zstd.Compressor(level: level, workers: workers) else { fatalError("zstd") }
    let t = best { _ = try? hugePlanes.withUnsafeBytes { try compressor.compress($0) } }
    print("workers \(workers) (applied \(compressor.workers)): \(fmt(Double(hugePlanes.count) / t / 1e6, 0)) MB/s")
}

print("\n## End to end: writeLayers + commit, verify, load (MB/s of raw bytes; includes fsync)")
func endToEnd(_ label: String, layers: [LayerCheckpoint], options: CheckpointWriteOptions) {
    let root = NSTemporaryDirectory() + "/elastic-checkpoint-bench-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: root) }
    let store = CheckpointStore(root: root)
    let header = CheckpointHeader(generation: 1, jobName: "bench", jobSpecHash: "0", dataCursor: CheckpointDataCursor(epoch: 0, offset: 0, samplesConsumed: 0),
                                  plan: CheckpointPlan(stages: [CheckpointPlan.Stage(firstLayer: 0, lastLayer: layers.count - 1, replicas: 1)]))
    var step = 0
    var summary: CheckpointSummary?
    let tWrite = best {
        step += 1
        do {
            try store.writeLayers(step: step, part: "all", layers: layers, options: options)
            summary = try store.commit(step: step, header: header, layerCount: layers.count)
        } catch { fatalError("\(error)") }
    }
    let path = store.directory(step: step)
    let tVerify = best { _ = CheckpointReader.verify(directory: path) }
    let tLoad = best { _ = try? CheckpointReader.load(directory: path) }
    guard let summary else { return }
    let raw = Double(summary.rawBytes)
    print("\(label): \(fmt(raw / 1e6, 1)) MB raw, ratio \(fmt(summary.ratio, 3)); write+commit \(fmt(raw / tWrite / 1e6, 0)) MB/s, verify \(fmt(raw / tVerify / 1e6, 0)) MB/s, load \(fmt(raw / tLoad / 1e6, 0)) MB/s")
}
let w1Layers = sgd.layers.enumerated().map { LayerCheckpoint(index: $0.offset, state: $0.element.state) }
endToEnd("W1 (SGD, 5 layers), defaults (level \(level), auto)", layers: w1Layers, options: CheckpointWriteOptions())
endToEnd("W1 (SGD, 5 layers), level 3, auto", layers: w1Layers, options: CheckpointWriteOptions(level: 3))
endToEnd("W1 (SGD, 5 layers), level \(level), never shuffle", layers: w1Layers, options: CheckpointWriteOptions(shuffle: .never))
let adamLayers = adam.layers.enumerated().map { LayerCheckpoint(index: $0.offset, state: $0.element.state) }
endToEnd("W1 (Adam, 5 layers), defaults", layers: adamLayers, options: CheckpointWriteOptions())
// A larger layer: 2048 x 2048 gaussian weight with a gaussian velocity of sd 1e-3.
let wide = LayerState(spec: LayerSpec(fanIn: 2048, fanOut: 2048), optimizerStep: 1, tensors: [
    NamedTensor(name: "weight", shape: [2048, 2048], values: big),
    NamedTensor(name: "bias", shape: [2048], values: gaussian(2048, sigma: 0.05, rng: &rng)),
    NamedTensor(name: "weight.velocity", shape: [2048 * 2048], values: gaussian(2048 * 2048, sigma: 1e-3, rng: &rng)),
    NamedTensor(name: "bias.velocity", shape: [2048], values: gaussian(2048, sigma: 1e-3, rng: &rng)),
])
for threads in [0, 2] {
    endToEnd("2048x2048 + velocity, defaults, \(threads) zstd threads", layers: [LayerCheckpoint(index: 0, state: wide)], options: CheckpointWriteOptions(compressionThreads: threads))
}
