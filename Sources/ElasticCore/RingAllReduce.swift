/// A piece of a ring all-reduce in flight: which phase and round, and where its values go.
public struct RingChunk: Sendable, Equatable {
    public enum Phase: UInt8, Sendable {
        case reduceScatter = 1
        case allGather = 2
    }

    public var phase: Phase
    public var round: Int
    /// Offset of `values` in the whole buffer.
    public var offset: Int
    public var values: [Float]

    public init(phase: Phase, round: Int, offset: Int, values: [Float]) {
        self.phase = phase
        self.round = round
        self.offset = offset
        self.values = values
    }
}

extension RingChunk {
    /// Which chunk of the exchange a message is; the receiver knows the keys it expects.
    public struct Key: Hashable, Sendable {
        public var phase: Phase
        public var round: Int
        public var offset: Int

        public init(phase: Phase, round: Int, offset: Int) {
            self.phase = phase
            self.round = round
            self.offset = offset
        }
    }

    public var key: Key { Key(phase: phase, round: round, offset: offset) }
}

/// The two neighbours of a rank in the ring: it sends to the next and receives, by key, what
/// the previous one sent.
public protocol RingLink: Sendable {
    func send(_ chunk: RingChunk) async throws
    func receive(_ key: RingChunk.Key) async throws -> [Float]
}

public struct RingError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Ring all-reduce (reduce-scatter, then all-gather) of a float buffer among `size` ranks: the
/// buffer is cut into `size` segments; in round k of the reduce-scatter rank r sends segment
/// (r − k) mod size and adds the segment (r − k − 1) mod size it receives; after size − 1 rounds
/// it holds the full sum of segment (r + 1) mod size, which the all-gather passes around. Each
/// segment travels in chunks of at most `chunkElements`, so sending and receiving overlap.
/// Every rank ends with the element-wise sum; accumulation is in float32, in ring order.
public enum RingAllReduce {
    public static func run(_ buffer: inout [Float], rank: Int, size: Int, link: any RingLink, chunkElements: Int = 1 << 18) async throws {
        precondition(size >= 1 && rank >= 0 && rank < size, "rank \(rank) of \(size)")
        precondition(chunkElements >= 1, "chunks hold at least one element")
        guard size > 1 else { return }
        let segments = EvenSplit.ranges(parts: size, count: buffer.count)
        func mod(_ value: Int) -> Int { ((value % size) + size) % size }

        for (phase, rounds) in [(RingChunk.Phase.reduceScatter, 0..<(size - 1)), (.allGather, 0..<(size - 1))] {
            for round in rounds {
                let sendSegment = phase == .reduceScatter ? mod(rank - round) : mod(rank + 1 - round)
                let receiveSegment = phase == .reduceScatter ? mod(rank - round - 1) : mod(rank - round)
                let outgoing = chunks(of: segments[sendSegment], size: chunkElements)
                let incoming = chunks(of: segments[receiveSegment], size: chunkElements)
                // Send everything of this round first (the link buffers), then fold in what arrives:
                // the neighbour does the same, so neither waits for the other.
                for range in outgoing {
                    try await link.send(RingChunk(phase: phase, round: round, offset: range.lowerBound, values: Array(buffer[range])))
                }
                for range in incoming {
                    let values = try await link.receive(RingChunk.Key(phase: phase, round: round, offset: range.lowerBound))
                    guard values.count == range.count else {
                        throw RingError("ring all-reduce chunk at \(phase) round \(round) offset \(range.lowerBound) holds \(values.count) values, expected \(range.count): the peers disagree on the buffer size")
                    }
                    buffer.withUnsafeMutableBufferPointer { target in
                        values.withUnsafeBufferPointer { source in
                            if phase == .reduceScatter {
                                for i in 0..<source.count { target[range.lowerBound + i] += source[i] }
                            } else {
                                for i in 0..<source.count { target[range.lowerBound + i] = source[i] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// A segment cut into chunks; an empty segment still sends one empty chunk, so both sides
    /// agree on the number of messages.
    static func chunks(of range: Range<Int>, size: Int) -> [Range<Int>] {
        guard !range.isEmpty else { return [range] }
        return stride(from: range.lowerBound, to: range.upperBound, by: size).map { $0..<min($0 + size, range.upperBound) }
    }
}

/// Which message of a step's gradient exchange a byte payload is: the exchange group (the
/// tensors that cross together, numbered the same on every replica), the phase and round of
/// the ring, and the offset of the chunk (in elements) or the replica whose payload it is.
public struct ExchangeKey: Hashable, Sendable {
    public var group: UInt32
    public var phase: UInt8
    public var round: UInt32
    public var offset: UInt32

    public init(group: UInt32, phase: UInt8, round: UInt32, offset: UInt32) {
        self.group = group
        self.phase = phase
        self.round = round
        self.offset = offset
    }
}

/// The byte-payload ring of a compressed gradient exchange: send to the next replica, receive
/// by key what the previous one sent.
public protocol ExchangeLink: Sendable {
    func send(_ key: ExchangeKey, _ bytes: [UInt8]) async throws
    func receive(_ key: ExchangeKey) async throws -> [UInt8]
}
