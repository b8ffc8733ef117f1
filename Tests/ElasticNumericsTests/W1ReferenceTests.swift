#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import ElasticCore
import ElasticTestSupport
import Testing
import ElasticNumerics

/// One run of the numpy reference (reference/w1.py), shared by the tests below:
/// `--samples 4096 --steps 20 --dump-dir DIR` writes x.f32, y.i32 and init.f32 and prints
/// `step t loss x` per step.
struct ReferenceRun: Sendable {
    static let samples = 4096
    static let steps = 20

    var inputs: [Float]
    var labels: [Int32]
    var initBytes: [UInt8]
    var losses: [Double]

    /// The script: $ELASTIC_W1_REFERENCE, or the package's reference/w1.py.
    static var script: String {
        (try? W1Reference.scriptPath()) ?? "reference/w1.py"
    }

    static let shared: Result<ReferenceRun, TestFailure> = {
        do { return .success(try ReferenceRun.run()) } catch let failure as TestFailure { return .failure(failure) } catch {
            return .failure(TestFailure("\(error)"))
        }
    }()

    static func run() throws -> ReferenceRun {
        guard access(script, R_OK) == 0 else {
            throw TestFailure("the W1 reference \(script) is missing; set ELASTIC_W1_REFERENCE to reference/w1.py")
        }
        let directory = try makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let arguments = ["python3", script, "--steps", String(steps), "--samples", String(samples),
                         "--seed", "42", "--batch", "256", "--dump-dir", directory]
        let status = try runProcess(arguments, stdout: "\(directory)/stdout.txt", stderr: "\(directory)/stderr.txt")
        guard status == 0 else {
            let stderr = String(decoding: (try? readFile("\(directory)/stderr.txt")) ?? [], as: UTF8.self)
            throw TestFailure("`\(arguments.joined(separator: " "))` exited with \(status) (python3 with numpy is required):\n\(stderr)")
        }
        let stdout = String(decoding: try readFile("\(directory)/stdout.txt"), as: UTF8.self)
        let losses = stdout.split(separator: "\n").compactMap { line -> Double? in
            let fields = line.split(separator: " ")
            return fields.count == 4 && fields[0] == "step" ? Double(fields[3]) : nil
        }
        return ReferenceRun(
            inputs: decodeFloats(try readFile("\(directory)/x.f32")),
            labels: decodeInt32s(try readFile("\(directory)/y.i32")),
            initBytes: try readFile("\(directory)/init.f32"),
            losses: losses
        )
    }
}

@Suite("W1 against the numpy reference")
struct W1ReferenceTests {
    @Test func initialWeightsMatchReferenceBytes() throws {
        let reference = try ReferenceRun.shared.get()
        let layers = W1.initialLayers(seed: 42)
        let ours = encodeFloats(layers.flatMap { $0.weight + $0.bias })
        #expect(ours.count == W1.model.parameterCount * 4)
        #expect(reference.initBytes.count == ours.count)
        let same = ours.count == reference.initBytes.count && ours.withUnsafeBytes { a in
            reference.initBytes.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 }
        }
        if !same, ours.count == reference.initBytes.count {
            let first = ours.indices.first { ours[$0] != reference.initBytes[$0] }!
            Issue.record("init.f32 differs first at byte \(first) (float \(first / 4))")
        }
        #expect(same)
    }

    @Test func singleLayersMatchTheWholeModelInitialization() {
        // Building layer 3 alone (a worker that holds only it) gives the same bits.
        let all = W1.initialLayers(seed: 7)
        let third = W1.model.initialLayer(3, seed: 7)
        #expect(third == all[3])
        // And the sequential stream agrees with the offset trick at the start of layer 1.
        var rng = SplitMix64(seed: 9)
        for _ in 0..<W1.model.layers[0].parameterCount { _ = rng.next() }
        let k = 1.0 / 512.0.squareRoot()
        let expected = Float((2 * rng.uniform() - 1) * k)
        #expect(W1.model.initialLayer(1, seed: 7).weight[0] == expected)
    }

    @Test func twentyStepsTrackTheReferenceLoss() throws {
        let reference = try ReferenceRun.shared.get()
        try #require(reference.losses.count == ReferenceRun.steps, "the reference printed \(reference.losses.count) losses")
        let n = ReferenceRun.samples
        let data = Matrix(rows: n, cols: W1.features, values: reference.inputs)
        try #require(reference.labels.count == n)
        var stage = Stage(layers: W1.initialLayers(seed: 42))
        // 16 steps per epoch of 4096 samples: steps 16–19 run in epoch 1's order.
        let stepsPerEpoch = n / W1.batchSize
        var order: [Int32] = []
        var worst = 0.0
        for step in 0..<ReferenceRun.steps {
            let (epoch, stepInEpoch) = step.quotientAndRemainder(dividingBy: stepsPerEpoch)
            if stepInEpoch == 0 { order = DataOrder.permutation(seed: 42, epoch: UInt64(epoch), count: n) }
            let positions = DataOrder.stepRange(step: stepInEpoch, batch: W1.batchSize)
            let indices = order[positions]
            let x = data.gatheringRows(indices)
            let labels = indices.map { reference.labels[Int($0)] }
            stage.zeroGrad()
            let (logits, cache) = stage.forward(x)
            let loss = try SoftmaxCrossEntropy.evaluate(logits: logits, labels: labels, normalizer: W1.batchSize)
            stage.accumulateGradients(loss.dLogits, cache: cache)
            stage.applyOptimizer(W1.optimizer, learningRate: W1.schedule.learningRate(at: step))
            let mean = loss.lossSum / Double(W1.batchSize)
            let relative = abs(mean - reference.losses[step]) / reference.losses[step]
            worst = max(worst, relative)
            #expect(relative < 1e-3, "step \(step): loss \(mean), reference \(reference.losses[step])")
        }
        print("W1 20 steps: largest relative loss difference to numpy \(worst)")
    }
}
