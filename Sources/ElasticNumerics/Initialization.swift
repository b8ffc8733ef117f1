import ElasticCore

/// The layer shapes of a model; layer i is the placement unit with id i.
public struct ModelSpec: Sendable, Hashable, Codable {
    public var layers: [LayerSpec]

    public init(layers: [LayerSpec]) {
        for (a, b) in zip(layers, layers.dropFirst()) {
            precondition(a.fanOut == b.fanIn, "layers do not chain: \(a.fanOut) outputs into \(b.fanIn) inputs")
        }
        self.layers = layers
    }

    /// An MLP over `dims` (e.g. [256, 512, 10]): `hidden` after every layer but the last,
    /// `output` after the last.
    public static func mlp(dims: [Int], hidden: Activation, output: Activation = .none) -> ModelSpec {
        precondition(dims.count >= 2, "an MLP needs at least input and output widths")
        let count = dims.count - 1
        return ModelSpec(layers: (0..<count).map { i in
            LayerSpec(fanIn: dims[i], fanOut: dims[i + 1], activation: i == count - 1 ? output : hidden)
        })
    }

    /// Floats in all weights and biases.
    public var parameterCount: Int { layers.reduce(0) { $0 + $1.parameterCount } }

    /// Layer `index` as initialized from `seed`, by W1's rule: stream seed+2 drawn layer by
    /// layer, W (fanIn × fanOut, row-major) then b, each value (2u − 1)·k in float64 with
    /// k = 1/√fanIn, rounded to float32. Any single layer can be built without the others.
    public func initialLayer(_ index: Int, seed: UInt64) -> Layer {
        precondition(layers.indices.contains(index), "no layer \(index) in a model of \(layers.count)")
        let spec = layers[index]
        let offset = layers[..<index].reduce(0) { $0 + $1.parameterCount }
        // Draw i of the stream seeded s + offset·γ is draw offset + i of the stream seeded s.
        var rng = SplitMix64(seed: (seed &+ 2) &+ UInt64(offset) &* 0x9E37_79B9_7F4A_7C15)
        let k = 1.0 / Double(spec.fanIn).squareRoot()
        func draw(_ count: Int) -> [Float] {
            (0..<count).map { _ in Float((2 * rng.uniform() - 1) * k) }
        }
        let weight = draw(spec.fanIn * spec.fanOut)
        let bias = draw(spec.fanOut)
        return Layer(spec: spec, weight: weight, bias: bias)
    }

    /// Layers `range` (default: all) initialized from `seed` (see `initialLayer`).
    public func initialLayers(_ range: Range<Int>? = nil, seed: UInt64) -> [Layer] {
        (range ?? layers.indices).map { initialLayer($0, seed: seed) }
    }
}

/// Workload W1 (docs/w1.md): the yardstick model, data and training settings.
public enum W1 {
    /// The seed of data, weights (seed+2) and sample order (seed+1000+epoch).
    public static let seed: UInt64 = 42
    /// Samples in the data set.
    public static let sampleCount = 65_536
    /// Input features.
    public static let features = 256
    /// Output classes.
    public static let classes = 10
    /// The global batch B.
    public static let batchSize = 256
    /// MLP 256 → 512 → 512 → 512 → 512 → 10, ReLU after every hidden layer; layers 0–4.
    public static let model = ModelSpec.mlp(dims: [256, 512, 512, 512, 512, 10], hidden: .relu)
    /// SGD, momentum 0.9, no weight decay.
    public static let optimizer = Optimizer.w1
    /// Learning rate 0.05 at every step.
    public static let schedule = LearningRateSchedule.constant(0.05)

    /// The initial layers 0–4 (or `range`) for `seed`, bit-identical to the reference's init.f32.
    public static func initialLayers(_ range: Range<Int>? = nil, seed: UInt64 = W1.seed) -> [Layer] {
        model.initialLayers(range, seed: seed)
    }
}
