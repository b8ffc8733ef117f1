import Testing
import ElasticNumerics

@Suite("Optimizers and schedules")
struct OptimizerTests {
    /// w = [1, −2], lr 0.1, momentum 0.9, gradients [0.5, 0.25] then [−1, 0.5]:
    /// v1 = [0.5, 0.25], w1 = [0.95, −2.025]; v2 = [−0.55, 0.725], w2 = [1.005, −2.0975].
    @Test func sgdMomentumTwoSteps() {
        let sgd = SGD(momentum: 0.9)
        var w: [Float] = [1, -2]
        var v: [Float] = [0, 0]
        sgd.update(&w, gradient: [0.5, 0.25], velocity: &v, learningRate: 0.1)
        #expect(v == [0.5, 0.25])
        #expect(abs(w[0] - 0.95) < 1e-7 && abs(w[1] - -2.025) < 1e-7)
        sgd.update(&w, gradient: [-1, 0.5], velocity: &v, learningRate: 0.1)
        #expect(abs(v[0] - -0.55) < 1e-7 && abs(v[1] - 0.725) < 1e-7)
        #expect(abs(w[0] - 1.005) < 1e-6 && abs(w[1] - -2.0975) < 1e-6)
        // Exactly W1's float32 operations: v ← μ·v + g; w ← w − lr·v.
        var v32: Float = 0.5
        var w32: Float = 0.95
        w32 = 1 - Float(0.1) * 0.5
        v32 = Float(0.9) * v32 + -1
        w32 = w32 - Float(0.1) * v32
        #expect(w[0] == w32)
    }

    /// Coupled weight decay: g ← g + wd·w. w = 2, g = 0, wd 0.5, lr 0.1: v = 1, w = 1.9.
    @Test func sgdWeightDecay() {
        var w: [Float] = [2]
        var v: [Float] = [0]
        SGD(momentum: 0.9, weightDecay: 0.5).update(&w, gradient: [0], velocity: &v, learningRate: 0.1)
        #expect(v == [1])
        #expect(abs(w[0] - 1.9) < 1e-7)
    }

    /// β1 0.9, β2 0.999, ε 1e-8, lr 0.1, w = [1, −0.5], gradients [0.5, −2] then [−0.25, 1]:
    /// step 1 moves each weight by lr·sign(g): [0.9, −0.4]; step 2: m = [0.02, −0.08],
    /// v = [0.00031225, 0.0049960], m̂ = m/0.19, v̂ = v/0.001999 → w = [0.8733663, −0.3733663].
    @Test func adamTwoSteps() {
        let adam = Adam(beta1: 0.9, beta2: 0.999, epsilon: 1e-8)
        var w: [Float] = [1, -0.5]
        var m: [Float] = [0, 0]
        var v: [Float] = [0, 0]
        adam.update(&w, gradient: [0.5, -2], m: &m, v: &v, step: 1, learningRate: 0.1)
        #expect(abs(w[0] - 0.9) < 1e-6 && abs(w[1] - -0.4) < 1e-6)
        adam.update(&w, gradient: [-0.25, 1], m: &m, v: &v, step: 2, learningRate: 0.1)
        #expect(abs(m[0] - 0.02) < 1e-7 && abs(m[1] - -0.08) < 1e-7)
        #expect(abs(v[0] - 0.000_312_25) < 1e-8)  // β2 = 0.999 in float32 is 0.99900001
        #expect(abs(w[0] - 0.873_366_3) < 1e-6 && abs(w[1] - -0.373_366_3) < 1e-6)
    }

    /// Decoupled decay (AdamW): w ← w·(1 − lr·wd) before the Adam step. wd 0.1, lr 0.1,
    /// w = 1, gradients 0.5 then −0.25: 0.99 − 0.1 = 0.89, then 0.89·0.99 − 0.0266337 = 0.8544663.
    @Test func adamDecoupledWeightDecay() {
        let adam = Adam(weightDecay: 0.1)
        var w: [Float] = [1]
        var m: [Float] = [0]
        var v: [Float] = [0]
        adam.update(&w, gradient: [0.5], m: &m, v: &v, step: 1, learningRate: 0.1)
        #expect(abs(w[0] - 0.89) < 1e-6)
        adam.update(&w, gradient: [-0.25], m: &m, v: &v, step: 2, learningRate: 0.1)
        #expect(abs(w[0] - 0.854_466_3) < 1e-6)
    }

    @Test func layerUpdateKeepsNamedSlotsAndCountsSteps() {
        var layer = Layer(spec: LayerSpec(fanIn: 2, fanOut: 1), weight: [1, 2], bias: [3])
        layer.gradients = [[0.5, -0.5], [1]]
        layer.applyOptimizer(.adam(Adam()), learningRate: 0.01)
        layer.applyOptimizer(.adam(Adam()), learningRate: 0.01)
        #expect(layer.optimizerState.step == 2)
        #expect(layer.optimizerState.slots.map(\.name) == ["weight.adam_m", "weight.adam_v", "bias.adam_m", "bias.adam_v"])
        #expect(layer.optimizerState.slots[2].values.count == 1)
        // Same gradient twice: each step moves by about lr against the gradient's sign.
        #expect(abs(layer.weight[0] - 0.98) < 1e-4 && abs(layer.weight[1] - 2.02) < 1e-4 && abs(layer.bias[0] - 2.98) < 1e-4)

        var sgdLayer = Layer(spec: LayerSpec(fanIn: 2, fanOut: 1), weight: [1, 2], bias: [3])
        sgdLayer.gradients = [[1, 1], [1]]
        sgdLayer.applyOptimizer(.w1, learningRate: 0.05)
        #expect(sgdLayer.optimizerState.slots.map(\.name) == ["weight.velocity", "bias.velocity"])
        #expect(sgdLayer.weight == [1 - Float(0.05), 2 - Float(0.05)])
    }

    @Test func constantSchedule() {
        let s = LearningRateSchedule.constant(0.05)
        #expect(s.learningRate(at: 0) == 0.05 && s.learningRate(at: 1_000_000) == 0.05)
    }

    /// Peak 1 after 10 warm-up steps, cosine to 0.1 at step 110.
    @Test func warmupCosineSchedule() {
        let s = LearningRateSchedule.warmupCosine(peak: 1, warmupSteps: 10, totalSteps: 110, minimum: 0.1)
        let expected: [(Int, Float)] = [(-3, 0.1), (0, 0.1), (4, 0.5), (9, 1), (10, 1), (35, 0.1 + 0.9 * 0.853_553_4),
                                         (60, 0.55), (85, 0.1 + 0.9 * 0.146_446_6), (110, 0.1), (10_000, 0.1)]
        for (step, rate) in expected {
            #expect(abs(s.learningRate(at: step) - rate) < 1e-6, "step \(step): \(s.learningRate(at: step)) vs \(rate)")
        }
        // Decreasing after the warm-up.
        let rates = (10...110).map { s.learningRate(at: $0) }
        #expect(zip(rates, rates.dropFirst()).allSatisfy { $0 >= $1 })
    }

    @Test func stepDecaySchedule() {
        let s = LearningRateSchedule.stepDecay(initial: 0.8, factor: 0.5, interval: 10)
        for (step, rate) in [(0, Float(0.8)), (9, 0.8), (10, 0.4), (19, 0.4), (25, 0.2), (100, 0.8 / 1024)] {
            #expect(abs(s.learningRate(at: step) - rate) < 1e-7, "step \(step)")
        }
    }
}
