import ElasticCore

/// Messages of the data plane (worker ⇄ worker, mutual TLS). The frame's generation is the
/// plan's: a receiver drops anything from another generation, so a fenced worker cannot write
/// into a newer one.
public enum DataMessage: Sendable, Equatable {
    /// First message on a link: the dialer says which generation it speaks for.
    case hello
    /// Stage s → stage s+1 of the same replica: a micro-batch's activations.
    case activation(Tensor)
    /// Stage s+1 → stage s: the gradient of the loss with respect to those activations.
    case gradient(Tensor)
    /// Replica r → replica r+1 of the same stage: a chunk of the gradient all-reduce.
    case ring(step: UInt64, RingChunk)
    /// A new holder of a stage asks a surviving one for its state at the plan's next step.
    case stateRequest(stage: UInt32, step: UInt64)
    /// The state: the layers of the stage, each an opaque blob (ElasticServices' layer codec).
    case stateReply(stage: UInt32, step: UInt64, layers: [[UInt8]])
    /// Replica r → replica r+1 of the same stage: a payload of a compressed gradient exchange
    /// (encoded ring chunk, sparse gradient, PowerSGD factor), opaque to the wire.
    case exchange(step: UInt64, key: ExchangeKey, bytes: [UInt8])

    /// A micro-batch tensor in flight.
    public struct Tensor: Sendable, Equatable {
        public var step: UInt64
        public var microBatch: UInt32
        public var rows: UInt32
        public var columns: UInt32
        public var values: [Float]

        public init(step: UInt64, microBatch: UInt32, rows: UInt32, columns: UInt32, values: [Float]) {
            self.step = step
            self.microBatch = microBatch
            self.rows = rows
            self.columns = columns
            self.values = values
        }
    }

    public enum Kind: UInt8, Sendable {
        case hello = 64, activation, gradient, ring, stateRequest, stateReply, exchange
    }

    /// The largest frame on the data plane.
    public static let maximumFrameSize = 512 << 20

    public func frame(generation: Generation) -> Frame {
        var writer = WireWriter(capacity: 64)
        let kind: Kind
        switch self {
        case .hello:
            kind = .hello
        case .activation(let tensor), .gradient(let tensor):
            kind = { if case .activation = self { return Kind.activation } else { return Kind.gradient } }()
            writer.write(tensor.step)
            writer.write(tensor.microBatch)
            writer.write(tensor.rows)
            writer.write(tensor.columns)
            writer.write(floats: tensor.values)
        case .ring(let step, let chunk):
            kind = .ring
            writer.write(step)
            writer.write(chunk.phase.rawValue)
            writer.write(UInt32(chunk.round))
            writer.write(UInt64(chunk.offset))
            writer.write(floats: chunk.values)
        case .stateRequest(let stage, let step):
            kind = .stateRequest
            writer.write(stage)
            writer.write(step)
        case .stateReply(let stage, let step, let layers):
            kind = .stateReply
            writer.write(stage)
            writer.write(step)
            writer.write(count: layers.count)
            for layer in layers { writer.write(bytes: layer) }
        case .exchange(let step, let key, let bytes):
            kind = .exchange
            writer.write(step)
            writer.write(key.group)
            writer.write(key.phase)
            writer.write(key.round)
            writer.write(key.offset)
            writer.write(bytes: bytes)
        }
        return Frame(kind: kind.rawValue, generation: generation, payload: writer.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        guard let kind = Kind(rawValue: frame.kind) else {
            throw WireError(.unknownMessageKind, "unknown data-plane message kind \(frame.kind)")
        }
        var reader = WireReader(frame.payload)
        switch kind {
        case .hello:
            self = .hello
        case .activation, .gradient:
            let step = try reader.read(UInt64.self)
            let micro = try reader.read(UInt32.self)
            let rows = try reader.read(UInt32.self)
            let columns = try reader.read(UInt32.self)
            let values = try reader.readFloats()
            guard UInt64(rows) * UInt64(columns) == UInt64(values.count) else {
                throw WireError(.invalidValue, "a \(rows)×\(columns) tensor cannot hold \(values.count) values")
            }
            let tensor = Tensor(step: step, microBatch: micro, rows: rows, columns: columns, values: values)
            self = kind == .activation ? .activation(tensor) : .gradient(tensor)
        case .ring:
            let step = try reader.read(UInt64.self)
            let rawPhase = try reader.read(UInt8.self)
            guard let phase = RingChunk.Phase(rawValue: rawPhase) else {
                throw WireError(.invalidValue, "unknown all-reduce phase \(rawPhase)")
            }
            let round = Int(try reader.read(UInt32.self))
            let offset = try reader.read(UInt64.self)
            guard offset <= UInt64(Int32.max) * 16 else { throw WireError(.invalidValue, "all-reduce offset \(offset) is out of range") }
            self = .ring(step: step, RingChunk(phase: phase, round: round, offset: Int(offset), values: try reader.readFloats()))
        case .stateRequest:
            self = .stateRequest(stage: try reader.read(UInt32.self), step: try reader.read(UInt64.self))
        case .stateReply:
            let stage = try reader.read(UInt32.self)
            let step = try reader.read(UInt64.self)
            let count = try reader.readCount(minimumItemSize: 4)
            var layers: [[UInt8]] = []
            for _ in 0..<count { layers.append(try reader.readBytes(limit: DataMessage.maximumFrameSize)) }
            self = .stateReply(stage: stage, step: step, layers: layers)
        case .exchange:
            let step = try reader.read(UInt64.self)
            let key = ExchangeKey(group: try reader.read(UInt32.self), phase: try reader.read(UInt8.self), round: try reader.read(UInt32.self), offset: try reader.read(UInt32.self))
            self = .exchange(step: step, key: key, bytes: try reader.readBytes(limit: DataMessage.maximumFrameSize))
        }
        try reader.expectEnd()
    }
}

extension WireWriter {
    /// A count, then float32 values as little-endian bytes.
    public mutating func write(floats: [Float]) {
        write(count: floats.count)
        #if _endian(little)
        floats.withUnsafeBytes { append(raw: $0) }
        #else
        for value in floats { write(integerLittleEndian: value.bitPattern) }
        #endif
    }
}

extension WireReader {
    public mutating func readFloats() throws(WireError) -> [Float] {
        let count = try readCount(minimumItemSize: 4)
        #if _endian(little)
        let raw = try readRaw(count * 4)
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            raw.withUnsafeBytes { source in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: source)
            }
            initialized = count
        }
        #else
        var values = [Float](repeating: 0, count: count)
        for i in 0..<count { values[i] = Float(bitPattern: try read(littleEndian: UInt32.self)) }
        return values
        #endif
    }
}
