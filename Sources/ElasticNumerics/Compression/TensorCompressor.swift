import ElasticCore

/// The compression of one parameter tensor's gradient on one replica: how it crosses the
/// data-parallel group (`exchange`) and the codec state that belongs to the layer.
///
/// The exchange is decided once from the job's compression and the tensor's shape: tensors
/// below `minimumElements` cross uncompressed; PowerSGD takes only matrices ([rows, cols],
/// row-major) where rank·(rows + cols) < rows·cols, and others cross uncompressed.
///
/// State moves with the layer (peer transfer, checkpoint) as named float32 tensors:
/// `<name>.residual` [shape] (top-k, PowerSGD) and `<name>.powersgd.q` [cols, rank]. Importing
/// an export resumes compression bit-identically. The residual is the replica's OWN
/// (`isReplicaLocal`): replicas' residuals differ, so it must stay out of the cross-replica
/// state checksum, and a replica that receives a layer from a peer should start with
/// `resetReplicaLocalState()` (copying a peer's residual would count its error twice).
/// Q is identical on all replicas and may be checksummed and copied.
public struct TensorCompressor: Sendable, Equatable {
    /// The tensor's name in the layer state (`weight`, `bias`).
    public let name: String
    public let shape: [Int]
    public let exchange: GradientExchange
    /// The top-k state; non-nil exactly when `exchange` is `.sparseAllGather`.
    public var topK: TopKCompressor?
    /// The PowerSGD state; non-nil exactly when `exchange` is `.lowRank`.
    public var powerSGD: PowerSGDCompressor?

    /// `seed` must be equal on every replica (see `LayerCompressor.seed`); `momentum` > 0 turns
    /// on top-k's momentum correction (the job's SGD momentum).
    public init(name: String, shape: [Int], compression: GradientCompression, seed: UInt64, momentum: Float = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.name = name
        self.shape = shape
        self.exchange = Self.exchange(shape: shape, compression: compression)
        let count = shape.reduce(1, *)
        switch exchange {
        case .ring: break
        case .sparseAllGather(let fraction, let values):
            var warmup = (steps: 0, fraction: Double?.none)
            if case .topk(_, _, let steps, let start) = compression.codec { warmup = (steps, start) }
            topK = TopKCompressor(count: count, fraction: fraction, valueFormat: values, momentum: momentum,
                                  warmupSteps: warmup.steps, warmupFraction: warmup.fraction)
        case .lowRank(let rank, let warmupSteps):
            powerSGD = PowerSGDCompressor(rows: shape[0], cols: shape[1], rank: rank, warmupSteps: warmupSteps, seed: seed)
        }
    }

    /// How a tensor of `shape` crosses the group under `compression`.
    public static func exchange(shape: [Int], compression: GradientCompression) -> GradientExchange {
        let count = shape.reduce(1, *)
        guard count > 0, count >= compression.minimumElements else { return .ring(.float32) }
        switch compression.codec {
        case .none: return .ring(.float32)
        case .fp16: return .ring(.fp16)
        case .bf16: return .ring(.bf16)
        case .int8(let chunk): return .ring(.int8(chunk: chunk))
        case .topk(let fraction, let values, _, _):
            return count <= SparseGradient.maximumCount ? .sparseAllGather(fraction: fraction, values: values) : .ring(.float32)
        case .powersgd(let rank, let warmupSteps):
            guard shape.count == 2, rank * (shape[0] + shape[1]) < count else { return .ring(.float32) }
            return .lowRank(rank: rank, warmupSteps: warmupSteps)
        }
    }

    public var elementCount: Int { shape.reduce(1, *) }

    // MARK: State

    /// The name of a state tensor that differs between replicas (a residual).
    public static func isReplicaLocal(stateTensor name: String) -> Bool {
        name.hasSuffix(".residual") || name.hasSuffix(".momentum")
    }

    /// Names of the state tensors `exportState` returns, in order.
    public var stateTensorNames: [String] {
        switch exchange {
        case .ring: []
        case .sparseAllGather: ["\(name).residual"] + ((topK?.momentum ?? 0) > 0 ? ["\(name).momentum"] : [])
        case .lowRank: ["\(name).residual", "\(name).powersgd.q"]
        }
    }

    /// The codec state as named tensors (empty for ring codecs). Any step in progress is not
    /// part of it: export between steps.
    public func exportState() -> [NamedTensor] {
        if let topK {
            return [NamedTensor(name: "\(name).residual", shape: shape, values: topK.residual)]
                + (topK.momentum > 0 ? [NamedTensor(name: "\(name).momentum", shape: shape, values: topK.velocity)] : [])
        }
        if let powerSGD {
            return [
                NamedTensor(name: "\(name).residual", shape: shape, values: powerSGD.residual),
                NamedTensor(name: "\(name).powersgd.q", shape: [powerSGD.cols, powerSGD.rank], values: powerSGD.q),
            ]
        }
        return []
    }

    /// Restores `exportState()` from `tensors`, which may hold other tensors too (e.g. a whole
    /// `LayerState`): those whose names this compressor expects are taken. Throws
    /// `.stateMismatch` when one is missing or misshapen; the state is then unchanged.
    public mutating func importState(_ tensors: [NamedTensor]) throws(CompressionError) {
        func take(_ name: String, shape: [Int]) throws(CompressionError) -> [Float] {
            guard let tensor = tensors.first(where: { $0.name == name }) else {
                throw CompressionError(.stateMismatch, "codec state \(name) is missing (was the state saved with another codec?)")
            }
            guard tensor.shape == shape else {
                throw CompressionError(.stateMismatch, "codec state \(name) has shape \(tensor.shape); expected \(shape)")
            }
            return tensor.values
        }
        if let topK {
            let residual = try take("\(name).residual", shape: shape)
            let velocity = topK.momentum > 0 ? try take("\(name).momentum", shape: shape) : nil
            try self.topK!.setResidual(residual)
            if let velocity { try self.topK!.setVelocity(velocity) }
        }
        if let powerSGD {
            let residual = try take("\(name).residual", shape: shape)
            let q = try take("\(name).powersgd.q", shape: [powerSGD.cols, powerSGD.rank])
            try self.powerSGD!.setState(residual: residual, q: q)
        }
    }

    /// Zeroes the replica-local state (residuals), keeping shared state (PowerSGD's Q).
    public mutating func resetReplicaLocalState() {
        topK?.resetResidual()
        powerSGD?.resetResidual()
    }

    // MARK: Traffic

    /// Bytes per step of this tensor for one replica in a group of `replicas`, exchanging
    /// as `RingAllReduce` does (segments per rank, messages of at most `chunkElements`).
    /// For PowerSGD and top-k, `step` (global, 0-based) tells warm-up apart; nil means after it.
    /// Top-k's size is an estimate (its index bytes depend on where the entries fall).
    public func traffic(replicas: Int, chunkElements: Int = 1 << 18, step: Int? = nil) -> GradientTraffic {
        let n = elementCount
        let uncompressed = GradientTraffic.ringBytesPerReplica(count: n, codec: .float32, replicas: replicas, chunkElements: chunkElements)
        var traffic = GradientTraffic(elements: n, encodedBytes: 4 * n, sentBytes: uncompressed, receivedBytes: uncompressed,
                                      uncompressedSentBytes: uncompressed)
        switch exchange {
        case .ring(let codec):
            let sent = GradientTraffic.ringBytesPerReplica(count: n, codec: codec, replicas: replicas, chunkElements: chunkElements)
            traffic.encodedBytes = codec.encodedSize(count: n)
            traffic.sentBytes = sent
            traffic.receivedBytes = sent
        case .sparseAllGather:
            if let step, topK!.isUncompressed(step: step) { break }
            let size = SparseGradient.estimatedEncodedSize(count: n, nonzeros: step.map { topK!.selected(step: $0) } ?? topK!.k, valueFormat: topK!.valueFormat)
            traffic.encodedBytes = size
            traffic.sentBytes = (replicas - 1) * size
            traffic.receivedBytes = (replicas - 1) * size
        case .lowRank(let rank, _):
            if let step, powerSGD!.isWarmup(step: step) { break }
            let (rows, cols) = (shape[0], shape[1])
            let sent = GradientTraffic.ringBytesPerReplica(count: rows * rank, codec: .float32, replicas: replicas, chunkElements: chunkElements)
                + GradientTraffic.ringBytesPerReplica(count: cols * rank, codec: .float32, replicas: replicas, chunkElements: chunkElements)
            traffic.encodedBytes = 4 * rank * (rows + cols)
            traffic.sentBytes = sent
            traffic.receivedBytes = sent
        }
        return traffic
    }
}

/// Bytes of gradient exchange per step for one replica: payload only (no framing).
/// Add them up over tensors and layers with `+`.
public struct GradientTraffic: Sendable, Equatable {
    /// Gradient elements covered.
    public var elements: Int
    /// One replica's compressed contribution (the encoded tensor, or PowerSGD's P and Q).
    public var encodedBytes: Int
    /// Bytes one replica sends per step (mean over the replicas of the ring).
    public var sentBytes: Int
    /// Bytes one replica receives per step.
    public var receivedBytes: Int
    /// What an uncompressed float32 ring all-reduce would send per replica per step.
    public var uncompressedSentBytes: Int

    public init(elements: Int, encodedBytes: Int, sentBytes: Int, receivedBytes: Int, uncompressedSentBytes: Int) {
        self.elements = elements
        self.encodedBytes = encodedBytes
        self.sentBytes = sentBytes
        self.receivedBytes = receivedBytes
        self.uncompressedSentBytes = uncompressedSentBytes
    }

    public static let zero = GradientTraffic(elements: 0, encodedBytes: 0, sentBytes: 0, receivedBytes: 0, uncompressedSentBytes: 0)

    /// float32 bytes of the gradient (4 per element).
    public var denseBytes: Int { 4 * elements }

    /// denseBytes / encodedBytes: how much smaller one replica's contribution is.
    public var compressionRatio: Double { Double(denseBytes) / Double(max(1, encodedBytes)) }

    /// uncompressedSentBytes / sentBytes: the saving on the wire (1 with a single replica).
    public var sendRatio: Double { sentBytes == 0 ? 1 : Double(uncompressedSentBytes) / Double(sentBytes) }

    public static func + (lhs: GradientTraffic, rhs: GradientTraffic) -> GradientTraffic {
        GradientTraffic(elements: lhs.elements + rhs.elements, encodedBytes: lhs.encodedBytes + rhs.encodedBytes,
                        sentBytes: lhs.sentBytes + rhs.sentBytes, receivedBytes: lhs.receivedBytes + rhs.receivedBytes,
                        uncompressedSentBytes: lhs.uncompressedSentBytes + rhs.uncompressedSentBytes)
    }

    /// Payload bytes one replica sends (= receives) in a ring all-reduce of `count` elements
    /// whose messages are encoded with `codec`, averaged over the ranks: every segment travels
    /// `replicas − 1` times in each phase, in messages of at most `chunkElements`.
    public static func ringBytesPerReplica(count: Int, codec: ElementCodec, replicas: Int, chunkElements: Int = 1 << 18) -> Int {
        precondition(replicas >= 1 && chunkElements >= 1, "\(replicas) replicas, chunks of \(chunkElements)")
        guard replicas > 1 else { return 0 }
        var segmentBytes = 0
        for segment in EvenSplit.ranges(parts: replicas, count: count) {
            let full = segment.count / chunkElements
            let rest = segment.count % chunkElements
            segmentBytes += full * codec.encodedSize(count: chunkElements) + codec.encodedSize(count: rest)
        }
        return 2 * (replicas - 1) * segmentBytes / replicas
    }
}

/// The compressors of one placement layer's tensors (weight [fanIn, fanOut], then bias
/// [fanOut]), with their state as named tensors, so that it moves and checkpoints with the
/// layer (see `TensorCompressor` for what is replica-local).
public struct LayerCompressor: Sendable, Equatable {
    /// In `Layer.tensorNames` order.
    public var tensors: [TensorCompressor]

    /// `jobSeed` and `layer` (the layer's id in the model) give every tensor the same seed on
    /// every replica, whatever the plan.
    public init(spec: LayerSpec, compression: GradientCompression, jobSeed: UInt64, layer: Int, momentum: Float = 0) {
        let shapes = [[spec.fanIn, spec.fanOut], [spec.fanOut]]
        tensors = zip(Layer.tensorNames, shapes).map { name, shape in
            TensorCompressor(name: name, shape: shape, compression: compression,
                             seed: Self.seed(jobSeed: jobSeed, layer: layer, tensor: name), momentum: momentum)
        }
    }

    /// FNV-1a 64 of ("powersgd", jobSeed, layer, tensor name), mixed by SplitMix64.
    public static func seed(jobSeed: UInt64, layer: Int, tensor: String) -> UInt64 {
        var hash = FNV1a64()
        hash.combine("powersgd")
        hash.combine(jobSeed)
        hash.combine(UInt64(layer))
        hash.combine(tensor)
        return SplitMix64.mix(hash.value)
    }

    /// Every tensor's `exportState()`, in order.
    public func exportState() -> [NamedTensor] {
        tensors.flatMap { $0.exportState() }
    }

    /// Restores every tensor's state from `tensors` (other names are ignored). All or nothing:
    /// on `.stateMismatch` the state is unchanged.
    public mutating func importState(_ state: [NamedTensor]) throws(CompressionError) {
        var restored = tensors
        for index in restored.indices { try restored[index].importState(state) }
        tensors = restored
    }

    /// Zeroes every residual (see `TensorCompressor.resetReplicaLocalState`).
    public mutating func resetReplicaLocalState() {
        for index in tensors.indices { tensors[index].resetReplicaLocalState() }
    }

    /// The layer's traffic (sum over its tensors).
    public func traffic(replicas: Int, chunkElements: Int = 1 << 18, step: Int? = nil) -> GradientTraffic {
        tensors.reduce(.zero) { $0 + $1.traffic(replicas: replicas, chunkElements: chunkElements, step: step) }
    }
}
