import ElasticCore

/// Bytes a replica moved for one step's gradient exchange.
public struct ExchangeTraffic: Sendable, Equatable {
    public var sent = 0
    public var received = 0
    /// What an uncompressed float32 ring would have sent for the same tensors.
    public var uncompressedSent = 0

    public init(sent: Int = 0, received: Int = 0, uncompressedSent: Int = 0) {
        self.sent = sent
        self.received = received
        self.uncompressedSent = uncompressedSent
    }

    /// Uncompressed over actual bytes sent (1 without compression).
    public var ratio: Double { sent == 0 ? 1 : Double(uncompressedSent) / Double(sent) }

    public static func + (lhs: ExchangeTraffic, rhs: ExchangeTraffic) -> ExchangeTraffic {
        ExchangeTraffic(sent: lhs.sent + rhs.sent, received: lhs.received + rhs.received, uncompressedSent: lhs.uncompressedSent + rhs.uncompressedSent)
    }
}

/// The exchanges of compressed gradients over an `ExchangeLink` ring (GradientExchange):
/// every replica ends with bit-identical sums.
public enum GradientSync {
    static let reduceScatter: UInt8 = 1
    static let allGather: UInt8 = 2
    static let gather: UInt8 = 3

    /// Ring all-reduce (sum) of `buffer` with messages encoded by `codec`. Reduce-scatter hops
    /// decode the received chunk and add it in float32, then encode the partial sum to send on;
    /// in the all-gather the owner of a segment encodes it once and decodes its own bytes back,
    /// and the others decode and forward the bytes unchanged, so all replicas agree bit for bit.
    public static func ring(_ buffer: inout [Float], codec: ElementCodec, rank: Int, size: Int, group: UInt32, link: any ExchangeLink, chunkElements: Int = 1 << 18) async throws -> ExchangeTraffic {
        precondition(size >= 1 && rank >= 0 && rank < size, "rank \(rank) of \(size)")
        var traffic = ExchangeTraffic()
        guard size > 1 else { return traffic }
        let segments = EvenSplit.ranges(parts: size, count: buffer.count)
        func mod(_ value: Int) -> Int { ((value % size) + size) % size }
        func chunks(_ range: Range<Int>) -> [Range<Int>] {
            guard !range.isEmpty else { return [range] }
            return stride(from: range.lowerBound, to: range.upperBound, by: chunkElements).map { $0..<min($0 + chunkElements, range.upperBound) }
        }
        func key(_ phase: UInt8, _ round: Int, _ offset: Int) -> ExchangeKey {
            ExchangeKey(group: group, phase: phase, round: UInt32(round), offset: UInt32(offset))
        }
        // Reduce-scatter.
        for round in 0..<(size - 1) {
            for range in chunks(segments[mod(rank - round)]) {
                let bytes = buffer.withUnsafeBufferPointer { codec.encode(UnsafeBufferPointer(rebasing: $0[range])) }
                try await link.send(key(reduceScatter, round, range.lowerBound), bytes)
                traffic.sent += bytes.count
                traffic.uncompressedSent += range.count * 4
            }
            for range in chunks(segments[mod(rank - round - 1)]) {
                let bytes = try await link.receive(key(reduceScatter, round, range.lowerBound))
                traffic.received += bytes.count
                try checkSize(bytes, codec: codec, count: range.count, round: round)
                try bytes.withUnsafeBytes { raw in
                    try buffer.withUnsafeMutableBufferPointer { target in
                        try codec.decodeAdd(raw, into: UnsafeMutableBufferPointer(rebasing: target[range]))
                    }
                }
            }
        }
        // All-gather: round 0 sends the owned segment, later rounds forward what arrived.
        var forward: [Int: [UInt8]] = [:]
        for range in chunks(segments[mod(rank + 1)]) {
            let bytes = buffer.withUnsafeBufferPointer { codec.encode(UnsafeBufferPointer(rebasing: $0[range])) }
            try bytes.withUnsafeBytes { raw in
                try buffer.withUnsafeMutableBufferPointer { target in
                    try codec.decode(raw, into: UnsafeMutableBufferPointer(rebasing: target[range]))
                }
            }
            forward[range.lowerBound] = bytes
        }
        for round in 0..<(size - 1) {
            for range in chunks(segments[mod(rank + 1 - round)]) {
                let bytes = forward[range.lowerBound] ?? []
                try await link.send(key(allGather, round, range.lowerBound), bytes)
                traffic.sent += bytes.count
                traffic.uncompressedSent += range.count * 4
            }
            forward = [:]
            for range in chunks(segments[mod(rank - round)]) {
                let bytes = try await link.receive(key(allGather, round, range.lowerBound))
                traffic.received += bytes.count
                try checkSize(bytes, codec: codec, count: range.count, round: round)
                try bytes.withUnsafeBytes { raw in
                    try buffer.withUnsafeMutableBufferPointer { target in
                        try codec.decode(raw, into: UnsafeMutableBufferPointer(rebasing: target[range]))
                    }
                }
                forward[range.lowerBound] = bytes
            }
        }
        return traffic
    }

    /// Every replica's payload, in replica order: a ring all-gather that forwards bytes as they
    /// came. `uncompressedElements`: the dense size the payload stands for (for the ratio).
    public static func allGather(_ payload: [UInt8], rank: Int, size: Int, group: UInt32, link: any ExchangeLink, uncompressedElements: Int) async throws -> (payloads: [[UInt8]], traffic: ExchangeTraffic) {
        var payloads = Array(repeating: [UInt8](), count: size)
        payloads[rank] = payload
        var traffic = ExchangeTraffic()
        guard size > 1 else { return (payloads, traffic) }
        func mod(_ value: Int) -> Int { ((value % size) + size) % size }
        for round in 0..<(size - 1) {
            let outgoing = payloads[mod(rank - round)]
            try await link.send(ExchangeKey(group: group, phase: gather, round: UInt32(round), offset: UInt32(mod(rank - round))), outgoing)
            traffic.sent += outgoing.count
            let source = mod(rank - round - 1)
            let incoming = try await link.receive(ExchangeKey(group: group, phase: gather, round: UInt32(round), offset: UInt32(source)))
            traffic.received += incoming.count
            payloads[source] = incoming
        }
        traffic.uncompressedSent = GradientTraffic.ringBytesPerReplica(count: uncompressedElements, codec: .float32, replicas: size)
        return (payloads, traffic)
    }

    private static func checkSize(_ bytes: [UInt8], codec: ElementCodec, count: Int, round: Int) throws {
        guard bytes.count == codec.encodedSize(count: count) else {
            throw CompressionError(.malformedPayload, "a gradient chunk of round \(round) holds \(bytes.count) bytes, \(codec) needs \(codec.encodedSize(count: count)) for \(count) values: the replicas disagree on the model or the codec")
        }
    }
}

/// The gradient compression of a stage's layers on one replica: each layer's codec state, and
/// the step's exchange of the stage's flat gradient buffer (`Stage.flatGradients()` layout:
/// each layer's weight, then its bias).
///
/// Tensors that cross with the same element codec are concatenated into one ring; every top-k
/// tensor is all-gathered on its own, every PowerSGD tensor all-reduces its P and Q. Exchange
/// groups are numbered in that order, the same on every replica.
public struct StageCompressor: Sendable, Equatable {
    public var layers: [LayerCompressor]
    public let compression: GradientCompression

    /// `momentum`: the job's SGD momentum, for top-k's momentum correction (0: none; Adam).
    public init(specs: [LayerSpec], firstLayer: Int, compression: GradientCompression, jobSeed: UInt64, momentum: Float = 0) {
        self.compression = compression
        layers = specs.enumerated().map { LayerCompressor(spec: $0.element, compression: compression, jobSeed: jobSeed, layer: firstLayer + $0.offset, momentum: momentum) }
    }

    /// The tensors whose summed exchange of step `step` is already a velocity (top-k with
    /// momentum correction, past an uncompressed warm-up), with their range in the flat buffer:
    /// the optimizer must apply them without momentum. With SGD's v ← m·v + g, feeding
    /// g = sum − m·v makes v the sum.
    public func momentumCorrected(step: Int) -> [(layer: Int, tensor: String, range: Range<Int>, momentum: Float)] {
        var result: [(layer: Int, tensor: String, range: Range<Int>, momentum: Float)] = []
        var offset = 0
        for (index, layer) in layers.enumerated() {
            for tensor in layer.tensors {
                let range = offset..<(offset + tensor.elementCount)
                offset = range.upperBound
                if let topK = tensor.topK, topK.momentum > 0, !topK.isUncompressed(step: step) { result.append((index, tensor.name, range, topK.momentum)) }
            }
        }
        return result
    }

    /// Whether any tensor crosses compressed (false: the plain float32 ring applies).
    public var compresses: Bool {
        layers.contains { $0.tensors.contains { $0.exchange != .ring(.float32) } }
    }

    /// Sums `flat` over the `size` replicas (every replica ends with the same values) and
    /// advances the codec state (error feedback, warm start). Mutates `self` only on success:
    /// a failed exchange leaves the state as it was.
    public mutating func sync(_ flat: inout [Float], step: Int, rank: Int, size: Int, link: any ExchangeLink) async throws -> ExchangeTraffic {
        guard size > 1 else { return ExchangeTraffic() }
        var next = self
        var traffic = ExchangeTraffic()
        var dense: [(codec: ElementCodec, ranges: [Range<Int>])] = []
        var sparse: [(layer: Int, tensor: Int, range: Range<Int>)] = []
        var lowRank: [(layer: Int, tensor: Int, range: Range<Int>, p: [Float])] = []
        func addDense(_ codec: ElementCodec, _ range: Range<Int>) {
            if let index = dense.firstIndex(where: { $0.codec == codec }) { dense[index].ranges.append(range) } else { dense.append((codec, [range])) }
        }
        var offset = 0
        for layerIndex in next.layers.indices {
            for tensorIndex in next.layers[layerIndex].tensors.indices {
                let tensor = next.layers[layerIndex].tensors[tensorIndex]
                let range = offset..<(offset + tensor.elementCount)
                offset = range.upperBound
                switch tensor.exchange {
                case .ring(let codec):
                    addDense(codec, range)
                case .sparseAllGather:
                    if next.layers[layerIndex].tensors[tensorIndex].topK!.isUncompressed(step: step) {
                        flat.withUnsafeBufferPointer { buffer in
                            next.layers[layerIndex].tensors[tensorIndex].topK!.skip(UnsafeBufferPointer(rebasing: buffer[range]))
                        }
                        addDense(.float32, range)
                    } else {
                        sparse.append((layerIndex, tensorIndex, range))
                    }
                case .lowRank:
                    let start = try flat.withUnsafeBufferPointer { buffer in
                        try next.layers[layerIndex].tensors[tensorIndex].powerSGD!.begin(UnsafeBufferPointer(rebasing: buffer[range]), step: step)
                    }
                    switch start {
                    case .uncompressed: addDense(.float32, range)
                    case .factor(let p): lowRank.append((layerIndex, tensorIndex, range, p))
                    }
                }
            }
        }
        precondition(offset == flat.count, "the stage's gradients hold \(flat.count) floats, its layers \(offset)")
        var group: UInt32 = 0
        for (codec, ranges) in dense {
            var buffer: [Float] = []
            buffer.reserveCapacity(ranges.reduce(0) { $0 + $1.count })
            for range in ranges { buffer.append(contentsOf: flat[range]) }
            traffic = traffic + (try await GradientSync.ring(&buffer, codec: codec, rank: rank, size: size, group: group, link: link))
            var at = 0
            for range in ranges {
                flat.replaceSubrange(range, with: buffer[at..<(at + range.count)])
                at += range.count
            }
            group += 1
        }
        for item in sparse {
            let picked = flat.withUnsafeBufferPointer { buffer in
                next.layers[item.layer].tensors[item.tensor].topK!.compress(UnsafeBufferPointer(rebasing: buffer[item.range]), step: step)
            }
            let (payloads, moved) = try await GradientSync.allGather(picked.encoded(), rank: rank, size: size, group: group, link: link, uncompressedElements: item.range.count)
            traffic = traffic + moved
            let topK = next.layers[item.layer].tensors[item.tensor].topK!
            let parts = try payloads.map { try SparseGradient(decoding: $0, count: item.range.count, nonzeros: topK.selected(step: step), valueFormat: topK.valueFormat) }
            flat.replaceSubrange(item.range, with: SparseGradient.sum(parts, count: item.range.count))
            group += 1
        }
        for item in lowRank {
            var p = item.p
            var moved = try await GradientSync.ring(&p, codec: .float32, rank: rank, size: size, group: group, link: link)
            group += 1
            var q = try next.layers[item.layer].tensors[item.tensor].powerSGD!.middle(reducedP: p)
            moved = moved + (try await GradientSync.ring(&q, codec: .float32, rank: rank, size: size, group: group, link: link))
            group += 1
            let approximation = try next.layers[item.layer].tensors[item.tensor].powerSGD!.finish(reducedQ: q)
            flat.replaceSubrange(item.range, with: approximation)
            moved.uncompressedSent = GradientTraffic.ringBytesPerReplica(count: item.range.count, codec: .float32, replicas: size)
            traffic = traffic + moved
        }
        self = next
        return traffic
    }

    /// The codec state of each layer, as named tensors (to move or checkpoint with the layer).
    public func exportState() -> [[NamedTensor]] { layers.map { $0.exportState() } }

    /// Restores each layer's codec state; `keepResiduals` false zeroes the replica-local
    /// residuals (a layer copied from another replica, or a restore on a replica other than the
    /// writer's).
    public mutating func importState(_ states: [[NamedTensor]], keepResiduals: Bool) throws(CompressionError) {
        guard states.count == layers.count else {
            throw CompressionError(.stateMismatch, "codec state for \(states.count) layers, the stage has \(layers.count)")
        }
        var restored = layers
        for index in restored.indices where !states[index].isEmpty || !restored[index].exportState().isEmpty {
            try restored[index].importState(states[index])
            if !keepResiduals { restored[index].resetReplicaLocalState() }
        }
        layers = restored
    }
}
