#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// SGD with momentum, exactly W1's rule in float32:
/// g ← g + weightDecay·w (only when weightDecay ≠ 0; coupled L2), v ← momentum·v + g, w ← w − lr·v.
public struct SGD: Sendable, Hashable, Codable {
    public var momentum: Float
    public var weightDecay: Float

    public init(momentum: Float = 0.9, weightDecay: Float = 0) {
        self.momentum = momentum
        self.weightDecay = weightDecay
    }

    /// One update of a flat tensor `w` with gradient `g` and its velocity slot.
    public func update(_ w: inout [Float], gradient g: [Float], velocity: inout [Float], learningRate lr: Float) {
        precondition(w.count == g.count && w.count == velocity.count, "SGD: tensor, gradient and velocity sizes differ")
        let (mu, wd) = (momentum, weightDecay)
        w.withUnsafeMutableBufferPointer { w in
            g.withUnsafeBufferPointer { g in
                velocity.withUnsafeMutableBufferPointer { v in
                    if wd == 0 {
                        for i in w.indices {
                            v[i] = mu * v[i] + g[i]
                            w[i] = w[i] - lr * v[i]
                        }
                    } else {
                        for i in w.indices {
                            v[i] = mu * v[i] + (g[i] + wd * w[i])
                            w[i] = w[i] - lr * v[i]
                        }
                    }
                }
            }
        }
    }
}

/// Adam (Kingma & Ba) in PyTorch's formulation, with optional decoupled weight decay (AdamW):
/// w ← w·(1 − lr·weightDecay); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
/// w ← w − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + ε), with t the 1-based step.
/// The coefficients 1−β1, 1−β2, the bias corrections and the decay factor are computed in
/// float64 from the float32 hyperparameters and rounded once; per-element arithmetic is float32.
public struct Adam: Sendable, Hashable, Codable {
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float

    public init(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    /// One update of a flat tensor `w` at step t (1-based) with its first and second moments.
    public func update(_ w: inout [Float], gradient g: [Float], m: inout [Float], v: inout [Float],
                       step t: Int, learningRate lr: Float) {
        precondition(w.count == g.count && w.count == m.count && w.count == v.count, "Adam: tensor, gradient and moment sizes differ")
        precondition(t >= 1, "Adam: the step count starts at 1")
        let (b1, b2, eps) = (beta1, beta2, epsilon)
        let (c1, c2) = (Float(1 - Double(b1)), Float(1 - Double(b2)))
        let stepSize = Float(Double(lr) / (1 - pow(Double(b1), Double(t))))
        let rootCorrection2 = Float((1 - pow(Double(b2), Double(t))).squareRoot())
        let decays = weightDecay != 0
        let decay = Float(1 - Double(lr) * Double(weightDecay))
        w.withUnsafeMutableBufferPointer { w in
            g.withUnsafeBufferPointer { g in
                m.withUnsafeMutableBufferPointer { m in
                    v.withUnsafeMutableBufferPointer { v in
                        for i in w.indices {
                            if decays { w[i] = w[i] * decay }
                            m[i] = b1 * m[i] + c1 * g[i]
                            v[i] = b2 * v[i] + c2 * (g[i] * g[i])
                            let denominator = v[i].squareRoot() / rootCorrection2 + eps
                            w[i] = w[i] - stepSize * (m[i] / denominator)
                        }
                    }
                }
            }
        }
    }
}

/// The optimizer of a job; the same for every layer.
public enum Optimizer: Sendable, Hashable, Codable {
    case sgd(SGD)
    case adam(Adam)

    /// W1's optimizer: SGD, momentum 0.9, no weight decay (the learning rate comes from the schedule).
    public static let w1 = Optimizer.sgd(SGD(momentum: 0.9))

    /// Slot names per parameter tensor, in order: SGD ["velocity"], Adam ["adam_m", "adam_v"].
    public var slotNames: [String] {
        switch self {
        case .sgd: ["velocity"]
        case .adam: ["adam_m", "adam_v"]
        }
    }
}

/// Optimizer state of one layer: the update count and, per parameter tensor in order (weight,
/// bias), one float array per slot of the optimizer, named `<tensor>.<slot>`
/// (`weight.velocity`, `bias.velocity`; or `weight.adam_m`, `weight.adam_v`, `bias.adam_m`,
/// `bias.adam_v`). Plain arrays, so it checkpoints and copies bit-exactly.
public struct OptimizerState: Sendable, Equatable {
    /// Updates applied so far (Adam's t after the update).
    public var step: Int
    /// Slot tensors, tensor-major, each of shape [count of its parameter tensor]; empty before
    /// the first update.
    public var slots: [NamedTensor]

    public init(step: Int = 0, slots: [NamedTensor] = []) {
        self.step = step
        self.slots = slots
    }

    /// The slot names `optimizer` keeps for tensors named `tensorNames`, in order.
    public static func slotNames(for optimizer: Optimizer, tensorNames: [String] = Layer.tensorNames) -> [String] {
        tensorNames.flatMap { tensor in optimizer.slotNames.map { "\(tensor).\($0)" } }
    }

    /// Creates zero slots on the first update; traps if the slots belong to another optimizer.
    mutating func prepare(for optimizer: Optimizer, tensorSizes: [Int]) {
        let names = OptimizerState.slotNames(for: optimizer)
        if slots.isEmpty {
            let perTensor = optimizer.slotNames.count
            slots = names.enumerated().map { index, name in
                let size = tensorSizes[index / perTensor]
                return NamedTensor(name: name, shape: [size], values: [Float](repeating: 0, count: size))
            }
        }
        precondition(slots.map(\.name) == names,
                     "optimizer state holds \(slots.map(\.name)), but \(optimizer) needs \(names)")
    }

    /// Updates parameter tensor number `tensor` with its slots (moved out and back, no copy).
    mutating func update(_ w: inout [Float], gradient: [Float], tensor: Int, optimizer: Optimizer, learningRate: Float) {
        switch optimizer {
        case .sgd(let sgd):
            var velocity = take(tensor)
            sgd.update(&w, gradient: gradient, velocity: &velocity, learningRate: learningRate)
            slots[tensor].values = velocity
        case .adam(let adam):
            var m = take(2 * tensor)
            var v = take(2 * tensor + 1)
            adam.update(&w, gradient: gradient, m: &m, v: &v, step: step, learningRate: learningRate)
            slots[2 * tensor].values = m
            slots[2 * tensor + 1].values = v
        }
    }

    private mutating func take(_ index: Int) -> [Float] {
        var values: [Float] = []
        swap(&values, &slots[index].values)
        return values
    }
}
