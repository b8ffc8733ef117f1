/// The shape of one placement layer: Linear(fanIn, fanOut) followed by an activation.
public struct LayerSpec: Sendable, Hashable, Codable {
    public var fanIn: Int
    public var fanOut: Int
    public var activation: Activation

    public init(fanIn: Int, fanOut: Int, activation: Activation = .none) {
        precondition(fanIn > 0 && fanOut > 0, "a layer needs positive fanIn and fanOut, got \(fanIn)→\(fanOut)")
        self.fanIn = fanIn
        self.fanOut = fanOut
        self.activation = activation
    }

    /// fanIn·fanOut + fanOut: the floats in the weight and bias.
    public var parameterCount: Int { fanIn * fanOut + fanOut }

    /// Multiply-add FLOPs of the forward pass per sample (2·fanIn·fanOut); a backward pass costs
    /// about twice as much. A planner's per-layer cost.
    public var forwardFLOPsPerSample: Int { 2 * fanIn * fanOut }
}

/// What `Layer.backward` needs from the matching forward call (input and activation state).
/// Opaque; it shares storage with the matrices it came from.
public struct LayerCache: Sendable {
    let input: Matrix
    /// ReLU: the output; GELU: the pre-activation; none: nil.
    let saved: Matrix?
}

/// A placement layer: z = x·W + b, then the activation. W is fanIn × fanOut row-major and b has
/// fanOut entries (W1's convention). Gradients accumulate over micro-batches until `zeroGrad()`.
///
/// Tensors are always listed in the order (weight, bias): `parameters`, `gradients`, and the
/// first two tensors of `LayerState`.
public struct Layer: Sendable, Equatable {
    public let spec: LayerSpec
    /// W, fanIn·fanOut floats, row-major (row = input feature).
    public var weight: [Float]
    /// b, fanOut floats.
    public var bias: [Float]
    /// dLoss/dW summed over the micro-batches since the last `zeroGrad()`.
    public var weightGrad: [Float]
    /// dLoss/db summed over the micro-batches since the last `zeroGrad()`.
    public var biasGrad: [Float]
    /// Optimizer slots and step count (empty until the first update).
    public var optimizerState: OptimizerState

    /// The tensor names, in order.
    public static let tensorNames = ["weight", "bias"]

    /// A layer with the given parameters, zero gradients and no optimizer state.
    public init(spec: LayerSpec, weight: [Float], bias: [Float]) {
        precondition(weight.count == spec.fanIn * spec.fanOut, "weight needs \(spec.fanIn * spec.fanOut) floats, got \(weight.count)")
        precondition(bias.count == spec.fanOut, "bias needs \(spec.fanOut) floats, got \(bias.count)")
        self.spec = spec
        self.weight = weight
        self.bias = bias
        self.weightGrad = [Float](repeating: 0, count: weight.count)
        self.biasGrad = [Float](repeating: 0, count: bias.count)
        self.optimizerState = OptimizerState()
    }

    // MARK: Forward and backward

    /// Runs the layer on a micro-batch (rows = samples, cols = fanIn). Returns the output
    /// (rows × fanOut) and the cache for `backward`.
    public func forward(_ input: Matrix) -> (output: Matrix, cache: LayerCache) {
        checkShapes(input.cols, "input")
        let (batch, fanIn, fanOut) = (input.rows, spec.fanIn, spec.fanOut)
        var z = Matrix(rows: batch, cols: fanOut)
        input.values.withUnsafeBufferPointer { x in
            weight.withUnsafeBufferPointer { w in
                z.values.withUnsafeMutableBufferPointer { out in
                    Kernels.sgemm(transA: false, transB: false, m: batch, n: fanOut, k: fanIn, alpha: 1,
                                  a: x, lda: fanIn, b: w, ldb: fanOut, beta: 0, c: out, ldc: fanOut)
                    bias.withUnsafeBufferPointer { b in
                        for r in 0..<batch {
                            let row = out.baseAddress! + r * fanOut
                            for j in 0..<fanOut { row[j] += b[j] }
                        }
                    }
                }
            }
        }
        switch spec.activation {
        case .none:
            return (z, LayerCache(input: input, saved: nil))
        case .relu:
            spec.activation.apply(&z.values)
            return (z, LayerCache(input: input, saved: z))
        case .gelu:
            var out = z
            spec.activation.apply(&out.values)
            return (out, LayerCache(input: input, saved: z))
        }
    }

    /// Backward for one micro-batch: adds dW = xᵀ·dZ and db = Σrows dZ to the gradients and
    /// returns dInput = dZ·Wᵀ (rows × fanIn), where dZ = dOutput ⊙ activation'(z).
    public mutating func backward(_ dOutput: Matrix, cache: LayerCache) -> Matrix {
        let dz = accumulate(dOutput, cache: cache)
        let (batch, fanIn, fanOut) = (dz.rows, spec.fanIn, spec.fanOut)
        var dx = Matrix(rows: batch, cols: fanIn)
        dz.values.withUnsafeBufferPointer { g in
            weight.withUnsafeBufferPointer { w in
                dx.values.withUnsafeMutableBufferPointer { out in
                    Kernels.sgemm(transA: false, transB: true, m: batch, n: fanIn, k: fanOut, alpha: 1,
                                  a: g, lda: fanOut, b: w, ldb: fanOut, beta: 0, c: out, ldc: fanIn)
                }
            }
        }
        return dx
    }

    /// Like `backward` but without computing dInput (for the model's first layer).
    public mutating func accumulateGradients(_ dOutput: Matrix, cache: LayerCache) {
        _ = accumulate(dOutput, cache: cache)
    }

    /// Adds this micro-batch's weight and bias gradients; returns dZ.
    private mutating func accumulate(_ dOutput: Matrix, cache: LayerCache) -> Matrix {
        checkShapes(cache.input.cols, "cache input")
        precondition(dOutput.cols == spec.fanOut && dOutput.rows == cache.input.rows,
                     "dOutput is \(dOutput.rows)×\(dOutput.cols), expected \(cache.input.rows)×\(spec.fanOut)")
        precondition(weightGrad.count == weight.count && biasGrad.count == bias.count, "gradient buffers were resized")
        var dz = dOutput
        if let saved = cache.saved { spec.activation.backward(&dz.values, saved: saved.values) }
        let (batch, fanIn, fanOut) = (dz.rows, spec.fanIn, spec.fanOut)
        cache.input.values.withUnsafeBufferPointer { x in
            dz.values.withUnsafeBufferPointer { g in
                weightGrad.withUnsafeMutableBufferPointer { gw in
                    Kernels.sgemm(transA: true, transB: false, m: fanIn, n: fanOut, k: batch, alpha: 1,
                                  a: x, lda: fanIn, b: g, ldb: fanOut, beta: 1, c: gw, ldc: fanOut)
                }
                biasGrad.withUnsafeMutableBufferPointer { gb in
                    for r in 0..<batch {
                        let row = g.baseAddress! + r * fanOut
                        for j in 0..<fanOut { gb[j] += row[j] }
                    }
                }
            }
        }
        return dz
    }

    private func checkShapes(_ inputCols: Int, _ what: String) {
        precondition(inputCols == spec.fanIn, "\(what) has \(inputCols) columns, the layer expects fanIn \(spec.fanIn)")
        precondition(weight.count == spec.fanIn * spec.fanOut && bias.count == spec.fanOut,
                     "weight/bias sizes no longer match \(spec.fanIn)→\(spec.fanOut)")
    }

    /// Sets both gradients to zero (keeps the buffers).
    public mutating func zeroGrad() {
        weightGrad.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        biasGrad.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }

    // MARK: Flat tensor access

    /// [weight, bias] as flat arrays.
    public var parameters: [[Float]] { [weight, bias] }

    /// [weightGrad, biasGrad]; setting replaces both (sizes must match), e.g. after all-reduce.
    public var gradients: [[Float]] {
        get { [weightGrad, biasGrad] }
        set {
            precondition(newValue.count == 2 && newValue[0].count == weight.count && newValue[1].count == bias.count,
                         "gradients must be [weight (\(weight.count)), bias (\(bias.count))]")
            weightGrad = newValue[0]
            biasGrad = newValue[1]
        }
    }

    /// Floats in weightGrad + biasGrad.
    public var gradientCount: Int { weight.count + bias.count }

    /// Appends weightGrad then biasGrad to `buffer` (for a flat all-reduce buffer).
    public func appendGradients(to buffer: inout [Float]) {
        buffer.append(contentsOf: weightGrad)
        buffer.append(contentsOf: biasGrad)
    }

    /// Overwrites weightGrad then biasGrad from `flat[offset...]`; returns the offset after them.
    @discardableResult
    public mutating func loadGradients(from flat: [Float], at offset: Int) -> Int {
        precondition(offset >= 0 && offset + gradientCount <= flat.count, "flat gradient buffer too short")
        let w = weight.count
        let b = bias.count
        flat.withUnsafeBufferPointer { src in
            weightGrad.withUnsafeMutableBufferPointer { dst in
                dst.baseAddress!.update(from: src.baseAddress! + offset, count: w)
            }
            biasGrad.withUnsafeMutableBufferPointer { dst in
                dst.baseAddress!.update(from: src.baseAddress! + offset + w, count: b)
            }
        }
        return offset + w + b
    }

    // MARK: Update

    /// Applies one optimizer update with the accumulated gradients (which it leaves in place;
    /// call `zeroGrad()` before the next step's micro-batches).
    public mutating func applyOptimizer(_ optimizer: Optimizer, learningRate: Float) {
        precondition(weightGrad.count == weight.count && biasGrad.count == bias.count, "gradient buffers were resized")
        optimizerState.prepare(for: optimizer, tensorSizes: [weight.count, bias.count])
        optimizerState.step += 1
        optimizerState.update(&weight, gradient: weightGrad, tensor: 0, optimizer: optimizer, learningRate: learningRate)
        optimizerState.update(&bias, gradient: biasGrad, tensor: 1, optimizer: optimizer, learningRate: learningRate)
    }

    /// Equality of parameters, gradients and optimizer state, bit for bit (NaN equals itself).
    public static func == (lhs: Layer, rhs: Layer) -> Bool {
        lhs.spec == rhs.spec && bitwiseEqual(lhs.weight, rhs.weight) && bitwiseEqual(lhs.bias, rhs.bias)
            && bitwiseEqual(lhs.weightGrad, rhs.weightGrad) && bitwiseEqual(lhs.biasGrad, rhs.biasGrad)
            && lhs.optimizerState == rhs.optimizerState
    }
}

