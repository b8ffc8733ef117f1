#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
import ElasticNumerics

/// Gradient checks by central finite differences. The scalar test loss is L = Σ output ⊙ R
/// (R fixed and random), summed in float64, so dL/dOutput = R. Each difference divides by the
/// step actually taken in float32. Perturbations that flip a ReLU (a kink) are skipped.
@Suite("Gradients")
struct GradientTests {
    static let step: Float = 1e-2

    /// Pattern of non-positive outputs of every ReLU layer (where the derivative switches).
    static func reluPattern(_ layers: [Layer], _ x: Matrix) -> [Bool] {
        var pattern: [Bool] = []
        var h = x
        for layer in layers {
            h = layer.forward(h).output
            if layer.spec.activation == .relu { pattern += h.values.map { $0 > 0 } }
        }
        return pattern
    }

    struct Check {
        var checked = 0
        var skipped = 0
        var worst: Double = 0
    }

    /// Compares analytic gradients with central differences for every coordinate of `values`
    /// (read/written through `get`/`set` on a copy of the layers and input).
    static func compare(
        _ name: String, analytic: [Float], count: Int,
        layers: [Layer], input: Matrix, weights r: [Float],
        perturb: (inout [Layer], inout Matrix, Int, Float) -> Void,
        tolerance: Double
    ) -> Check {
        var check = Check()
        let basePattern = reluPattern(layers, input)
        for i in 0..<count {
            var (lp, xp) = (layers, input)
            var (lm, xm) = (layers, input)
            perturb(&lp, &xp, i, step)
            perturb(&lm, &xm, i, -step)
            if reluPattern(lp, xp) != basePattern || reluPattern(lm, xm) != basePattern {
                check.skipped += 1
                continue
            }
            let plus = dot(Stage(layers: lp).forward(xp).output.values, r)
            let minus = dot(Stage(layers: lm).forward(xm).output.values, r)
            // The step actually taken (difference of the perturbed float32 values).
            let taken = realizedStep(layers, input, lp, xp, lm, xm)
            let numeric = (plus - minus) / taken
            let error = abs(numeric - Double(analytic[i])) / max(1, abs(numeric))
            check.worst = max(check.worst, error)
            check.checked += 1
            #expect(error <= tolerance, "\(name)[\(i)]: analytic \(analytic[i]), numeric \(numeric)")
        }
        return check
    }

    /// The one coordinate that differs between the + and − perturbations, as a float64 step.
    static func realizedStep(_ base: [Layer], _ x: Matrix, _ lp: [Layer], _ xp: Matrix, _ lm: [Layer], _ xm: Matrix) -> Double {
        func differing(_ p: [Float], _ m: [Float]) -> Double? {
            for (a, b) in zip(p, m) where a != b { return Double(a) - Double(b) }
            return nil
        }
        if let d = differing(xp.values, xm.values) { return d }
        for (a, b) in zip(lp, lm) {
            if let d = differing(a.weight, b.weight) { return d }
            if let d = differing(a.bias, b.bias) { return d }
        }
        fatalError("no coordinate was perturbed")
    }

    /// Checks every weight, bias and input coordinate of a stack of layers.
    static func checkStack(_ layers: [Layer], batch: Int, random: inout TestRandom, tolerance: Double) {
        let x = random.matrix(batch, layers[0].spec.fanIn)
        let (out, cache) = Stage(layers: layers).forward(x)
        let r = random.floats(out.values.count)
        var stage = Stage(layers: layers)
        let dx = stage.backward(Matrix(rows: out.rows, cols: out.cols, values: r), cache: cache)
        var total = Check()
        func add(_ c: Check) {
            total.checked += c.checked
            total.skipped += c.skipped
            total.worst = max(total.worst, c.worst)
        }
        add(compare("input", analytic: dx.values, count: x.values.count, layers: layers, input: x, weights: r,
                    perturb: { _, x, i, h in x.values[i] += h }, tolerance: tolerance))
        for l in layers.indices {
            add(compare("layer\(l).weight", analytic: stage.layers[l].weightGrad, count: layers[l].weight.count,
                        layers: layers, input: x, weights: r,
                        perturb: { ls, _, i, h in ls[l].weight[i] += h }, tolerance: tolerance))
            add(compare("layer\(l).bias", analytic: stage.layers[l].biasGrad, count: layers[l].bias.count,
                        layers: layers, input: x, weights: r,
                        perturb: { ls, _, i, h in ls[l].bias[i] += h }, tolerance: tolerance))
        }
        print("gradient check \(layers.map(\.spec.activation)): \(total.checked) coordinates, \(total.skipped) skipped at ReLU kinks, worst relative error \(total.worst)")
        #expect(total.skipped * 10 <= total.checked, "too many coordinates sat on a ReLU kink")
    }

    @Test func linear() {
        var random = TestRandom(seed: 101)
        Self.checkStack([random.layer(5, 4, .none)], batch: 3, random: &random, tolerance: 2e-4)
    }

    @Test func relu() {
        var random = TestRandom(seed: 102)
        Self.checkStack([random.layer(6, 5, .relu)], batch: 4, random: &random, tolerance: 2e-4)
    }

    @Test func gelu() {
        var random = TestRandom(seed: 103)
        Self.checkStack([random.layer(6, 5, .gelu)], batch: 4, random: &random, tolerance: 2e-4)
    }

    @Test func threeLayerStage() {
        var random = TestRandom(seed: 104)
        let layers = [random.layer(5, 7, .relu), random.layer(7, 6, .gelu), random.layer(6, 4, .none)]
        Self.checkStack(layers, batch: 3, random: &random, tolerance: 5e-4)
    }

    @Test func reluBackwardUsesTheOutputMask() {
        // z = x·W + b with W = [1, -1], b = 0: x = 2 gives z = [2, -2].
        var layer = Layer(spec: LayerSpec(fanIn: 1, fanOut: 2, activation: .relu), weight: [1, -1], bias: [0, 0])
        let (out, cache) = layer.forward(Matrix(rows: 1, cols: 1, values: [2]))
        #expect(out.values == [2, 0])
        let dx = layer.backward(Matrix(rows: 1, cols: 2, values: [3, 5]), cache: cache)
        #expect(layer.weightGrad == [6, 0])
        #expect(layer.biasGrad == [3, 0])
        #expect(dx.values == [3])
    }

    @Test func geluValues() {
        // Reference values of the tanh approximation.
        let layer = Layer(spec: LayerSpec(fanIn: 1, fanOut: 3, activation: .gelu), weight: [1, -1, 0.5], bias: [0, 0, 0])
        let out = layer.forward(Matrix(rows: 1, cols: 1, values: [1])).output.values
        #expect(abs(out[0] - 0.841_192) < 1e-5)
        #expect(abs(out[1] - -0.158_808) < 1e-5)
        #expect(abs(out[2] - 0.345_714) < 1e-5)
    }

    @Test func softmaxCrossEntropy() throws {
        var random = TestRandom(seed: 105)
        let (rows, classes, normalizer) = (5, 4, 7)
        let logits = random.matrix(rows, classes, -3, 3)
        let labels = random.labels(rows, classes: classes)
        let result = try SoftmaxCrossEntropy.evaluate(logits: logits, labels: labels, normalizer: normalizer)
        var worst = 0.0
        for i in 0..<logits.values.count {
            var plus = logits
            var minus = logits
            plus.values[i] += Self.step
            minus.values[i] -= Self.step
            let lp = try SoftmaxCrossEntropy.evaluate(logits: plus, labels: labels, normalizer: normalizer).lossSum
            let lm = try SoftmaxCrossEntropy.evaluate(logits: minus, labels: labels, normalizer: normalizer).lossSum
            let numeric = (lp - lm) / (Double(plus.values[i]) - Double(minus.values[i])) / Double(normalizer)
            let error = abs(numeric - Double(result.dLogits.values[i]))
            worst = max(worst, error)
            #expect(error < 2e-5, "dLogits[\(i)] \(result.dLogits.values[i]) vs numeric \(numeric)")
        }
        print("softmax cross-entropy: worst absolute error \(worst)")
        // Rows of dLogits sum to zero (softmax minus one-hot).
        for r in 0..<rows {
            let sum = (0..<classes).reduce(Float(0)) { $0 + result.dLogits[r, $1] }
            #expect(abs(sum) < 1e-6)
        }
    }

    @Test func softmaxCrossEntropyValuesAndStability() throws {
        // Two classes with logits [0, ln 3]: p = [1/4, 3/4].
        let logits = Matrix(rows: 2, cols: 2, values: [0, Float(1.0986123), 1000, 1000 + Float(1.0986123)])
        let result = try SoftmaxCrossEntropy.evaluate(logits: logits, labels: [0, 1], normalizer: 4)
        let expected = -log(0.25) - log(0.75)
        #expect(abs(result.lossSum - expected) < 1e-5)  // huge logits do not overflow
        #expect(abs(result.dLogits[0, 0] - (0.25 - 1) / 4) < 1e-6)
        #expect(abs(result.dLogits[1, 1] - (0.75 - 1) / 4) < 1e-6)
        #expect(result.correct == 1)
        #expect(throws: NumericsError.self) {
            try SoftmaxCrossEntropy.evaluate(logits: logits, labels: [0, 2], normalizer: 4)
        }
        #expect(throws: NumericsError.self) {
            try SoftmaxCrossEntropy.evaluate(logits: logits, labels: [0], normalizer: 4)
        }
    }

    /// Micro-batches (and replicas whose gradients are summed, as an all-reduce does) with the
    /// global-batch normalizer give the full-batch gradient.
    @Test func microBatchesAndReplicasAddUpToTheFullBatch() throws {
        var random = TestRandom(seed: 106)
        let layers = [random.layer(6, 8, .relu), random.layer(8, 7, .gelu), random.layer(7, 5, .none)]
        let batch = 12
        let x = random.matrix(batch, 6)
        let labels = random.labels(batch, classes: 5)

        func run(_ stage: inout Stage, rows: Range<Int>) throws -> Double {
            let (logits, cache) = stage.forward(x.rows(rows))
            let loss = try SoftmaxCrossEntropy.evaluate(logits: logits, labels: Array(labels[rows]), normalizer: batch)
            stage.accumulateGradients(loss.dLogits, cache: cache)
            return loss.lossSum
        }

        var full = Stage(layers: layers)
        let fullLoss = try run(&full, rows: 0..<batch)
        let reference = full.flatGradients()
        let tolerance = 2e-6 * max(1, maxAbs(reference))

        var micro = Stage(layers: layers)
        var microLoss = 0.0
        for rows in [0..<5, 5..<9, 9..<12] { microLoss += try run(&micro, rows: rows) }
        #expect(abs(microLoss - fullLoss) < 1e-9 * max(1, fullLoss))
        #expect(maxAbsDiff(micro.flatGradients(), reference) <= tolerance)

        // Two replicas, each with two micro-batches, then their gradients summed.
        var replicaA = Stage(layers: layers)
        var replicaB = Stage(layers: layers)
        for rows in [0..<3, 3..<6] { _ = try run(&replicaA, rows: rows) }
        for rows in [6..<10, 10..<12] { _ = try run(&replicaB, rows: rows) }
        let summed = zip(replicaA.flatGradients(), replicaB.flatGradients()).map { $0 + $1 }
        replicaA.loadFlatGradients(summed)
        replicaB.loadFlatGradients(summed)
        #expect(maxAbsDiff(replicaA.flatGradients(), reference) <= tolerance)
        #expect(replicaA.flatGradients() == summed)

        // zeroGrad clears, and the next micro-batch starts from zero.
        micro.zeroGrad()
        #expect(micro.flatGradients().allSatisfy { $0 == 0 })
        _ = try run(&micro, rows: 0..<batch)
        #expect(maxAbsDiff(micro.flatGradients(), reference) <= tolerance)
    }

    @Test func firstStageSkipsOnlyTheInputGradient() {
        var random = TestRandom(seed: 107)
        let layers = [random.layer(4, 6, .relu), random.layer(6, 3, .none)]
        let x = random.matrix(5, 4)
        let d = random.matrix(5, 3)
        var a = Stage(layers: layers)
        var b = Stage(layers: layers)
        let cache = a.forward(x).cache
        _ = a.backward(d, cache: cache)
        b.accumulateGradients(d, cache: cache)
        #expect(a == b)
        // Shape checks for data from peers.
        #expect(throws: Never.self) { try a.checkInput(x) }
        #expect(throws: NumericsError.self) { try a.checkInput(random.matrix(5, 3)) }
        #expect(throws: Never.self) { try a.checkOutputGradient(d, cache: cache) }
        #expect(throws: NumericsError.self) { try a.checkOutputGradient(random.matrix(4, 3), cache: cache) }
    }
}
