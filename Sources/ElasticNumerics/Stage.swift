/// What `Stage.backward` needs from the matching forward call: one cache per layer.
public struct StageCache: Sendable {
    let layers: [LayerCache]
}

/// A pipeline stage: a contiguous run of layers (fanOut of each = fanIn of the next) that one
/// worker holds. Forward and backward run over all of them for one micro-batch.
public struct Stage: Sendable, Equatable {
    public var layers: [Layer]

    public init(layers: [Layer]) {
        precondition(!layers.isEmpty, "a stage holds at least one layer")
        for (a, b) in zip(layers, layers.dropFirst()) {
            precondition(a.spec.fanOut == b.spec.fanIn, "layers do not chain: \(a.spec.fanOut) outputs into \(b.spec.fanIn) inputs")
        }
        self.layers = layers
    }

    /// Input columns (fanIn of the first layer).
    public var inputWidth: Int { layers[0].spec.fanIn }
    /// Output columns (fanOut of the last layer).
    public var outputWidth: Int { layers[layers.count - 1].spec.fanOut }

    /// Throws `.shapeMismatch` unless `input` fits `forward` (which traps on a bad shape): use
    /// it on activations that arrive from a peer.
    public func checkInput(_ input: Matrix) throws(NumericsError) {
        guard input.cols == inputWidth, input.values.count == input.rows * input.cols else {
            throw NumericsError(.shapeMismatch, "input is \(input.rows)×\(input.cols); this stage takes \(inputWidth) columns")
        }
    }

    /// Throws `.shapeMismatch` unless `dOutput` fits `backward` with `cache` (which traps on
    /// a bad shape): use it on gradients that arrive from a peer.
    public func checkOutputGradient(_ dOutput: Matrix, cache: StageCache) throws(NumericsError) {
        let rows = cache.layers.first?.input.rows ?? 0
        guard dOutput.rows == rows, dOutput.cols == outputWidth, dOutput.values.count == rows * outputWidth else {
            throw NumericsError(.shapeMismatch, "output gradient is \(dOutput.rows)×\(dOutput.cols); expected \(rows)×\(outputWidth)")
        }
    }

    /// Runs every layer on a micro-batch; returns the last output and the caches.
    public func forward(_ input: Matrix) -> (output: Matrix, cache: StageCache) {
        var x = input
        var caches: [LayerCache] = []
        caches.reserveCapacity(layers.count)
        for layer in layers {
            let (y, cache) = layer.forward(x)
            caches.append(cache)
            x = y
        }
        return (x, StageCache(layers: caches))
    }

    /// Backward through every layer, last to first, accumulating gradients; returns dInput to
    /// send to the previous stage.
    public mutating func backward(_ dOutput: Matrix, cache: StageCache) -> Matrix {
        precondition(cache.layers.count == layers.count, "cache from a stage of \(cache.layers.count) layers")
        var g = dOutput
        for i in layers.indices.reversed() {
            g = layers[i].backward(g, cache: cache.layers[i])
        }
        return g
    }

    /// Like `backward`, but skips dInput of the first layer (for the model's first stage).
    public mutating func accumulateGradients(_ dOutput: Matrix, cache: StageCache) {
        precondition(cache.layers.count == layers.count, "cache from a stage of \(cache.layers.count) layers")
        var g = dOutput
        for i in layers.indices.reversed() {
            if i == 0 {
                layers[i].accumulateGradients(g, cache: cache.layers[i])
            } else {
                g = layers[i].backward(g, cache: cache.layers[i])
            }
        }
    }

    /// Zeroes every layer's gradients.
    public mutating func zeroGrad() {
        for i in layers.indices { layers[i].zeroGrad() }
    }

    /// Applies one optimizer update to every layer.
    public mutating func applyOptimizer(_ optimizer: Optimizer, learningRate: Float) {
        for i in layers.indices { layers[i].applyOptimizer(optimizer, learningRate: learningRate) }
    }

    /// Floats in all gradients.
    public var gradientCount: Int { layers.reduce(0) { $0 + $1.gradientCount } }

    /// All gradients in one flat buffer: layer by layer, weight then bias (for all-reduce).
    public func flatGradients() -> [Float] {
        var buffer: [Float] = []
        buffer.reserveCapacity(gradientCount)
        for layer in layers { layer.appendGradients(to: &buffer) }
        return buffer
    }

    /// Overwrites all gradients from a buffer laid out as `flatGradients()`.
    public mutating func loadFlatGradients(_ flat: [Float]) {
        precondition(flat.count == gradientCount, "flat gradients hold \(flat.count) floats, the stage has \(gradientCount)")
        var offset = 0
        for i in layers.indices { offset = layers[i].loadGradients(from: flat, at: offset) }
    }

    /// Each layer's state, in order.
    public var states: [LayerState] { layers.map(\.state) }

    /// Each layer's `checksum()`, in order.
    public func checksums() -> [UInt64] { layers.map { $0.checksum() } }
}
