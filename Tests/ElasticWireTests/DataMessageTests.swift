import ElasticTestSupport
import ElasticCore
import ElasticWire
import Testing

// MARK: - Samples

/// Data-plane messages with awkward shapes: empty, 0-row and 0-column tensors, empty ring
/// chunks, extreme steps, rounds and offsets, and a few larger tensors.
enum DataSamples {
    static let smallTensor = DataMessage.Tensor(
        step: 42, microBatch: 3, rows: 2, columns: 3,
        values: [1, -2.5, 0.1, -0.0, .greatestFiniteMagnitude, .leastNonzeroMagnitude])

    /// `rows × columns` deterministic values of every sign and magnitude (no NaN: messages are
    /// compared with ==).
    static func tensor(step: UInt64, microBatch: UInt32, rows: UInt32, columns: UInt32, seed: UInt64) -> DataMessage.Tensor {
        var rng = SplitMix64(seed: seed)
        let values = (0..<Int(rows) * Int(columns)).map { _ in Float(Int(rng.below(2_001)) - 1_000) / 7 }
        return DataMessage.Tensor(step: step, microBatch: microBatch, rows: rows, columns: columns, values: values)
    }

    static let largeTensor = tensor(step: 9, microBatch: 15, rows: 1_000, columns: 37, seed: 1)

    /// `count` deterministic bytes of every value: an opaque layer blob.
    static func blob(count: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in rng.byte() }
    }

    /// A ~100 KB layer, as a stage of a mid-sized model would send.
    static let largeBlob = blob(count: 100 << 10, seed: 6)

    /// Small enough to truncate at every byte and to fuzz.
    static let small: [DataMessage] = [
        .hello,
        .activation(smallTensor),
        .gradient(smallTensor),
        .activation(DataMessage.Tensor(step: 0, microBatch: 0, rows: 0, columns: 0, values: [])),
        .gradient(DataMessage.Tensor(step: 1, microBatch: 1, rows: 0, columns: 37, values: [])),
        .activation(DataMessage.Tensor(step: .max, microBatch: .max, rows: 5, columns: 0, values: [])),
        .gradient(DataMessage.Tensor(step: 7, microBatch: 2, rows: 1, columns: 1, values: [.infinity])),
        .activation(tensor(step: 3, microBatch: 1, rows: 4, columns: 5, seed: 2)),
        .ring(step: 0, RingChunk(phase: .reduceScatter, round: 0, offset: 0, values: [])),
        .ring(step: 7, RingChunk(phase: .allGather, round: 3, offset: 1 << 20, values: [1, 2, -3, .infinity])),
        .ring(step: .max, RingChunk(phase: .allGather, round: Int(UInt32.max), offset: Int(Int32.max) * 16, values: [])),
        .ring(step: 12, RingChunk(phase: .reduceScatter, round: 1, offset: 5, values: [0.5, -0.0, .leastNormalMagnitude])),
        .stateRequest(stage: 0, step: 0),
        .stateRequest(stage: 1, step: 42),
        .stateRequest(stage: .max, step: .max),
        .stateReply(stage: 0, step: 0, layers: []),
        .stateReply(stage: 1, step: 42, layers: [blob(count: 37, seed: 7)]),
        .stateReply(stage: .max, step: .max, layers: [[], [0xFF, 0, 0, 0, 0x7F], blob(count: 200, seed: 8)]),
        .stateReply(stage: 3, step: 1, layers: [[]]),
        .exchange(step: 7, key: ExchangeKey(group: 0, phase: 1, round: 0, offset: 0), bytes: []),
        .exchange(step: .max, key: ExchangeKey(group: .max, phase: 3, round: 2, offset: 1 << 20), bytes: blob(count: 91, seed: 5)),
    ]

    static let all: [DataMessage] = small + [
        .activation(largeTensor),
        .gradient(tensor(step: 10, microBatch: 0, rows: 37, columns: 1_000, seed: 3)),
        .ring(step: 99, RingChunk(phase: .reduceScatter, round: 2, offset: 1 << 18,
                                  values: tensor(step: 0, microBatch: 0, rows: 1, columns: 1 << 14, seed: 4).values)),
        .stateReply(stage: 2, step: 1_234, layers: [largeBlob, [], blob(count: 3, seed: 9)]),
        .stateReply(stage: 0, step: 5, layers: [largeBlob]),
    ]
}

/// The kind byte a data message travels under (named so as not to collide with a future
/// `DataMessage.kind`).
extension DataMessage {
    var sampleKind: Kind {
        switch self {
        case .hello: .hello
        case .activation: .activation
        case .gradient: .gradient
        case .ring: .ring
        case .stateRequest: .stateRequest
        case .stateReply: .stateReply
        case .exchange: .exchange
        }
    }
}

// MARK: - Round trips and layout

@Suite("DataMessage round trips")
struct DataMessageRoundTripTests {
    @Test func samplesCoverEveryKindAndPhase() {
        #expect(Set(DataSamples.small.map(\.sampleKind.rawValue)) == Set(64...70))
        let phases: [RingChunk.Phase] = DataSamples.small.compactMap { if case .ring(_, let chunk) = $0 { chunk.phase } else { nil } }
        #expect(Set(phases) == [.reduceScatter, .allGather])
        // State replies of 0, 1 and 3 layers, an empty layer among them, and a ~100 KB one.
        let replies: [[[UInt8]]] = DataSamples.all.compactMap { if case .stateReply(_, _, let layers) = $0 { layers } else { nil } }
        #expect(Set(replies.map(\.count)).isSuperset(of: [0, 1, 3]))
        #expect(replies.contains { $0.contains([]) })
        #expect(replies.contains { $0.contains { $0.count >= 100_000 } })
    }

    @Test(arguments: DataSamples.all)
    func roundTripsThroughTheDecoder(message: DataMessage) throws {
        for generation in Samples.generations {
            let frame = message.frame(generation: generation)
            #expect(frame.kind == message.sampleKind.rawValue)
            #expect(frame.generation == generation)
            let bytes = frame.encoded()
            #expect(bytes.count == Frame.headerSize + frame.payload.count)
            let frames = try decodeFrames(bytes, maximumFrameSize: DataMessage.maximumFrameSize)
            #expect(frames == [frame])
            let decoded = try DataMessage(frame: try #require(frames.first))
            #expect(decoded == message)
            #expect(decoded.frame(generation: generation) == frame)
        }
    }

    @Test func payloadSizesAreAsDocumented() {
        // Tensors: 8 + 4 + 4 + 4 header fields, a 4-byte count, 4 bytes per value.
        #expect(DataMessage.activation(DataSamples.largeTensor).frame(generation: 1).payload.count == 24 + 4 * 37_000)
        #expect(DataMessage.gradient(DataMessage.Tensor(step: 0, microBatch: 0, rows: 0, columns: 9, values: [])).frame(generation: 1).payload.count == 24)
        // Ring chunks: 8 + 1 + 4 + 8, a count, 4 bytes per value.
        #expect(DataMessage.ring(step: 0, RingChunk(phase: .allGather, round: 0, offset: 0, values: [])).frame(generation: 1).payload.count == 25)
        #expect(DataMessage.hello.frame(generation: 1).payload.isEmpty)
        // State requests: 4 + 8. Replies: 4 + 8, a count, a 4-byte length per layer and its bytes.
        #expect(DataMessage.stateRequest(stage: 0, step: 0).frame(generation: 1).payload.count == 12)
        #expect(DataMessage.stateReply(stage: 0, step: 0, layers: []).frame(generation: 1).payload.count == 16)
        // An exchange payload: step (8), group (4), phase (1), round (4), offset (4), then the bytes.
        #expect(DataMessage.exchange(step: 2, key: ExchangeKey(group: 1, phase: 2, round: 3, offset: 4), bytes: [9]).frame(generation: 1).payload == [
            0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1, 9,
        ])
        #expect(DataMessage.stateReply(stage: 0, step: 0, layers: [[], [1], DataSamples.largeBlob]).frame(generation: 1).payload.count
                == 16 + 4 + 5 + 4 + (100 << 10))
    }

    @Test func kindNumbersAreStable() {
        let expected: [(DataMessage.Kind, UInt8)] = [
            (.hello, 64), (.activation, 65), (.gradient, 66), (.ring, 67), (.stateRequest, 68), (.stateReply, 69),
        ]
        for (kind, raw) in expected { #expect(kind.rawValue == raw, "\(kind)") }
        #expect(RingChunk.Phase.reduceScatter.rawValue == 1)
        #expect(RingChunk.Phase.allGather.rawValue == 2)
    }

    /// A frame sent to the wrong plane is refused by kind, never misread.
    @Test func controlAndDataKindsDoNotOverlap() throws {
        let control = Set(ControlMessage.Kind.allCases.map(\.rawValue))
        for raw in UInt8.min...UInt8.max {
            let isData = DataMessage.Kind(rawValue: raw) != nil
            #expect(!(isData && control.contains(raw)), "kind \(raw) is on both planes")
            let frame = Frame(kind: raw, generation: 1, payload: [])
            if !isData {
                expectWireError(.unknownMessageKind, "kind \(raw)") { () throws(WireError) in try DataMessage(frame: frame) }
            }
            if !control.contains(raw) {
                expectWireError(.unknownMessageKind, "kind \(raw)") { () throws(WireError) in try ControlMessage(frame: frame) }
            }
        }
        for message in DataSamples.small {
            expectWireError(.unknownMessageKind) { () throws(WireError) in try ControlMessage(frame: message.frame(generation: 1)) }
        }
        for message in Samples.all {
            expectWireError(.unknownMessageKind) { () throws(WireError) in try DataMessage(frame: message.frame(generation: 1)) }
        }
    }

    @Test func tensorBytesAreExactlyAsDocumented() {
        let tensor = DataMessage.Tensor(step: 0x0102_0304_0506_0708, microBatch: 9, rows: 1, columns: 2, values: [1, -2.5])
        #expect(DataMessage.activation(tensor).frame(generation: 0x11).encoded() == [
            0, 0, 0, 42,                    // length: 10 of header rest + 32 of payload
            1,                              // version
            65,                             // kind: activation
            0, 0, 0, 0, 0, 0, 0, 0x11,      // generation, big-endian
            1, 2, 3, 4, 5, 6, 7, 8,         // step, big-endian
            0, 0, 0, 9,                     // micro-batch
            0, 0, 0, 1,                     // rows
            0, 0, 0, 2,                     // columns
            0, 0, 0, 2,                     // value count, big-endian
            0x00, 0x00, 0x80, 0x3F,         // 1.0 = 0x3F800000, little-endian
            0x00, 0x00, 0x20, 0xC0,         // -2.5 = 0xC0200000, little-endian
        ])
        let gradient = DataMessage.gradient(tensor).frame(generation: 0x11)
        #expect(gradient.kind == 66)
        #expect(gradient.payload == DataMessage.activation(tensor).frame(generation: 0x11).payload)
    }

    @Test func ringBytesAreExactlyAsDocumented() {
        let chunk = RingChunk(phase: .allGather, round: 0x0A0B, offset: 0x0102_0304_05, values: [0.5])
        #expect(DataMessage.ring(step: 3, chunk).frame(generation: 1).payload == [
            0, 0, 0, 0, 0, 0, 0, 3,         // step
            2,                              // phase: all-gather
            0, 0, 0x0A, 0x0B,               // round
            0, 0, 0, 0x01, 0x02, 0x03, 0x04, 0x05,  // offset (in values), u64
            0, 0, 0, 1,                     // value count
            0x00, 0x00, 0x00, 0x3F,         // 0.5 = 0x3F000000, little-endian
        ])
        #expect(DataMessage.ring(step: 3, chunk).frame(generation: 1).kind == 67)
        #expect(DataMessage.hello.frame(generation: 258).encoded() == [0, 0, 0, 10, 1, 64, 0, 0, 0, 0, 0, 0, 1, 2])
    }

    @Test func stateBytesAreExactlyAsDocumented() throws {
        #expect(DataMessage.stateRequest(stage: 0x0102_0304, step: 0x0506_0708_090A_0B0C).frame(generation: 0x11).encoded() == [
            0, 0, 0, 22,                    // length: 10 of header rest + 12 of payload
            1,                              // version
            68,                             // kind: state request
            0, 0, 0, 0, 0, 0, 0, 0x11,      // generation
            1, 2, 3, 4,                     // stage, u32
            5, 6, 7, 8, 9, 10, 11, 12,      // step, u64
        ])
        let reply = DataMessage.stateReply(stage: 2, step: 42, layers: [[0xAB, 0xCD], [], [0x00]])
        let frame = reply.frame(generation: 7)
        #expect(frame.kind == 69)
        #expect(frame.payload == [
            0, 0, 0, 2,                     // stage
            0, 0, 0, 0, 0, 0, 0, 42,        // step
            0, 0, 0, 3,                     // 3 layers:
            0, 0, 0, 2, 0xAB, 0xCD,         //   2 bytes
            0, 0, 0, 0,                     //   empty
            0, 0, 0, 1, 0x00,               //   1 byte
        ])
        #expect(try DataMessage(frame: frame) == reply)
        #expect(DataMessage.stateReply(stage: 0, step: 0, layers: []).frame(generation: 7).payload == [UInt8](repeating: 0, count: 16))
    }

    /// Layer blobs are opaque: copied byte for byte, whatever they hold, in order, and many
    /// small layers are as fine as a few large ones.
    @Test func layerBlobsTravelByteForByte() throws {
        let every = (0...255).map { UInt8($0) }
        let many = (0..<1_000).map { index in index % 7 == 0 ? [] : [UInt8(truncatingIfNeeded: index)] }
        for layers in [[every], [every.reversed(), every], many, [[UInt8]](repeating: [], count: 500)] as [[[UInt8]]] {
            let frame = DataMessage.stateReply(stage: 1, step: 2, layers: layers).frame(generation: 3)
            let decoded = try DataMessage(frame: frame)
            guard case .stateReply(let stage, let step, let received) = decoded else {
                Issue.record("decoded \(decoded)")
                continue
            }
            #expect(stage == 1 && step == 2)
            #expect(received == layers)
            #expect(decoded.frame(generation: 3) == frame)
        }
        // From a slice that does not start at zero.
        let body = DataMessage.stateReply(stage: 1, step: 2, layers: [every]).frame(generation: 3).payload
        let bytes = [UInt8](repeating: 0xEE, count: 3) + body + [0xEE]
        #expect(try DataMessage(frame: Frame(kind: 69, generation: 3, payload: Array(bytes[3..<(3 + body.count)]))) == .stateReply(stage: 1, step: 2, layers: [every]))
    }

    /// Float payloads are copied, not converted: NaN payloads (signalling or not), negative
    /// zero, subnormals and infinities arrive bit for bit.
    @Test func floatsTravelBitForBit() throws {
        let patterns: [UInt32] = [0x7FC0_0000, 0x7FA0_0000, 0xFFC0_0001, 0x7F80_0001, 0x8000_0000, 0x0000_0001, 0x007F_FFFF,
                                  0x7F80_0000, 0xFF80_0000, 0x3F80_0000, 0xFFFF_FFFF, 0x0123_4567]
        let values = patterns.map { Float(bitPattern: $0) }
        var writer = WireWriter()
        writer.write(floats: values)
        #expect(writer.bytes == [0, 0, 0, UInt8(patterns.count)] + values.flatMap(littleEndianBytes))
        var reader = WireReader(writer.bytes)
        #expect(try reader.readFloats().map(\.bitPattern) == patterns)
        try reader.expectEnd()

        let tensor = DataMessage.Tensor(step: 1, microBatch: 0, rows: 3, columns: 4, values: values)
        for message in [DataMessage.activation(tensor), .gradient(tensor), .ring(step: 1, RingChunk(phase: .reduceScatter, round: 0, offset: 0, values: values))] {
            let frame = message.frame(generation: 2)
            let decoded = try DataMessage(frame: frame)
            switch decoded {
            case .activation(let t), .gradient(let t): #expect(t.values.map(\.bitPattern) == patterns)
            case .ring(_, let chunk): #expect(chunk.values.map(\.bitPattern) == patterns)
            case .hello, .stateRequest, .stateReply, .exchange: Issue.record("decoded \(decoded)")
            }
            #expect(decoded.frame(generation: 2) == frame)
        }
    }

    /// The reader copies floats out of any slice, at any alignment.
    @Test func floatsAreReadFromUnalignedSlices() throws {
        let values: [Float] = [1, -2.5, 3.25, 1e-30, -7]
        let body = payload { $0.write(floats: values) }
        for junk in 0..<8 {
            let bytes = [UInt8](repeating: 0xEE, count: junk) + body + [0xEE]
            var reader = WireReader(bytes[junk..<(junk + body.count)])
            #expect(try reader.readFloats() == values, "offset \(junk)")
            #expect(reader.remaining == 0)
        }
        var empty = WireReader([0, 0, 0, 0])
        #expect(try empty.readFloats() == [])
        try empty.expectEnd()
    }

    @Test func littleEndianIntegersRoundTrip() throws {
        var writer = WireWriter()
        writer.write(integerLittleEndian: UInt32(0x0102_0304))
        writer.write(integerLittleEndian: UInt16(0xA1B2))
        writer.write(integerLittleEndian: UInt64(0x0102_0304_0506_0708))
        writer.write(integerLittleEndian: Int64(-2))
        writer.write(integerLittleEndian: Int32.min)
        writer.write(integerLittleEndian: UInt8(0xFE))
        #expect(writer.bytes == [4, 3, 2, 1, 0xB2, 0xA1, 8, 7, 6, 5, 4, 3, 2, 1,
                                 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0x80, 0xFE])
        var reader = WireReader(writer.bytes)
        #expect(try reader.read(littleEndian: UInt32.self) == 0x0102_0304)
        #expect(try reader.read(littleEndian: UInt16.self) == 0xA1B2)
        #expect(try reader.read(littleEndian: UInt64.self) == 0x0102_0304_0506_0708)
        #expect(try reader.read(littleEndian: Int64.self) == -2)
        #expect(try reader.read(littleEndian: Int32.self) == .min)
        #expect(try reader.read(littleEndian: UInt8.self) == 0xFE)
        try reader.expectEnd()
        expectWireError(.truncated) { () throws(WireError) in try reader.read(littleEndian: UInt8.self) }
        var short = WireReader([1, 2, 3])
        expectWireError(.truncated) { () throws(WireError) in try short.read(littleEndian: UInt32.self) }
        #expect(short.remaining == 3, "a failed read consumes nothing")
    }

    @Test func rawReadsTakeExactlyTheirBytes() throws {
        var reader = WireReader([9, 1, 2, 3, 4, 5][1...])
        #expect(try reader.readRaw(0) == [])
        #expect(Array(try reader.readRaw(2)) == [1, 2])
        expectWireError(.truncated) { () throws(WireError) in try reader.readRaw(4) }
        expectWireError(.truncated) { () throws(WireError) in try reader.readRaw(-1) }
        #expect(Array(try reader.readRaw(3)) == [3, 4, 5])
        try reader.expectEnd()
    }

    /// `read(integer:)` and `read(littleEndian:)` are generic over FixedWidthInteger, and
    /// promise a WireError rather than a trap: for Int8 a byte ≥ 0x80 must not trap in the
    /// conversion (they use `T(truncatingIfNeeded:)`). No message reads an Int8 today.
    @Test
    func signedBytesDecodeWithoutTrapping() throws {
        var big = WireReader([0x80, 0xFF])
        #expect(try big.read(integer: Int8.self) == .min)
        #expect(try big.read(integer: Int8.self) == -1)
        var little = WireReader([0x80, 0xFF])
        #expect(try little.read(littleEndian: Int8.self) == .min)
        #expect(try little.read(littleEndian: Int8.self) == -1)
    }

    @Test func signedBytesBelow0x80DecodeToday() throws {
        var reader = WireReader([0x7F, 0x00, 0x7F, 0x01])
        #expect(try reader.read(integer: Int8.self) == 127)
        #expect(try reader.read(integer: Int8.self) == 0)
        #expect(try reader.read(littleEndian: Int8.self) == 127)
        #expect(try reader.read(littleEndian: Int8.self) == 1)
        // Wider signed integers are fine: every byte fits before the shift.
        var wide = WireReader([0xFF, 0xFE, 0xFE, 0xFF, 0x80, 0, 0, 0])
        #expect(try wide.read(integer: Int16.self) == -2)
        #expect(try wide.read(littleEndian: Int16.self) == -2)
        #expect(try wide.read(integer: Int32.self) == Int32.min)
    }

    /// A state reply larger than a control-plane frame goes through a data-plane decoder, in any
    /// chunking, between other messages.
    @Test func largeStateRepliesStreamThroughADataPlaneDecoder() throws {
        let seed = TestSeed.make("DataMessage large state reply chunking")
        var rng = SplitMix64(seed: seed)
        let big = DataMessage.stateReply(stage: 1, step: 77, layers: [DataSamples.blob(count: 3 << 20, seed: 10), [], DataSamples.largeBlob])
        let messages: [DataMessage] = [.stateRequest(stage: 1, step: 77), big, .hello, .stateReply(stage: 1, step: 77, layers: [DataSamples.largeBlob])]
        let bytes = messages.flatMap { $0.frame(generation: 4).encoded() }

        var control = FrameDecoder()
        control.append(bytes)
        #expect(try control.next() == messages[0].frame(generation: 4))
        expectWireError(.frameTooLarge) { () throws(WireError) in try control.next() }

        for round in 0..<3 {
            var decoder = FrameDecoder(maximumFrameSize: DataMessage.maximumFrameSize)
            var received: [DataMessage] = []
            var offset = 0
            while offset < bytes.count {
                let size = min(bytes.count - offset, 1 + rng.below([4_099, 65_536, 1 << 20][round]))
                decoder.append(bytes[offset..<offset + size])
                offset += size
                while let frame = try decoder.next() { received.append(try DataMessage(frame: frame)) }
            }
            #expect(received == messages, "seed \(seed), round \(round)")
            #expect(decoder.bufferedByteCount == 0)
        }
    }

    /// A tensor larger than a control-plane frame goes through a data-plane decoder, in any
    /// chunking.
    @Test func largeTensorsStreamThroughADataPlaneDecoder() throws {
        let seed = TestSeed.make("DataMessage large tensor chunking")
        var rng = SplitMix64(seed: seed)
        let big = DataMessage.gradient(DataSamples.tensor(step: 5, microBatch: 1, rows: 512, columns: 600, seed: 5))
        let bytes = big.frame(generation: 3).encoded() + DataMessage.activation(DataSamples.largeTensor).frame(generation: 3).encoded()
        #expect(bytes.count > Frame.defaultMaximumSize)

        var control = FrameDecoder()
        control.append(bytes)
        expectWireError(.frameTooLarge) { () throws(WireError) in try control.next() }

        for round in 0..<4 {
            var decoder = FrameDecoder(maximumFrameSize: DataMessage.maximumFrameSize)
            var messages: [DataMessage] = []
            var offset = 0
            while offset < bytes.count {
                let size = min(bytes.count - offset, 1 + rng.below([997, 1_500, 70_000][round % 3]))
                decoder.append(bytes[offset..<offset + size])
                offset += size
                while let frame = try decoder.next() { messages.append(try DataMessage(frame: frame)) }
            }
            #expect(messages == [big, .activation(DataSamples.largeTensor)], "seed \(seed), round \(round)")
            #expect(decoder.bufferedByteCount == 0)
        }
    }
}

// MARK: - Rejections

@Suite("DataMessage rejections")
struct DataMessageRejectionTests {
    func tensorPayload(rows: UInt32, columns: UInt32, values: [Float]) -> [UInt8] {
        payload {
            $0.write(UInt64(1)); $0.write(UInt32(0)); $0.write(rows); $0.write(columns)
            $0.write(floats: values)
        }
    }

    func ringPayload(phase: UInt8 = 1, round: UInt32 = 0, offset: UInt64 = 0, values: [Float] = [1]) -> [UInt8] {
        payload {
            $0.write(UInt64(1)); $0.write(phase); $0.write(round); $0.write(offset)
            $0.write(floats: values)
        }
    }

    @Test(arguments: DataSamples.small)
    func everyTruncationOfAPayloadIsRefusedAsTruncated(message: DataMessage) {
        let full = message.frame(generation: 3)
        for length in 0..<full.payload.count {
            let cut = Frame(kind: full.kind, generation: full.generation, payload: Array(full.payload[..<length]))
            expectWireError(.truncated, "\(message.sampleKind) cut to \(length) of \(full.payload.count)") { () throws(WireError) in
                try DataMessage(frame: cut)
            }
        }
    }

    @Test(arguments: DataSamples.small)
    func trailingBytesAfterAPayloadAreRefused(message: DataMessage) {
        let full = message.frame(generation: 3)
        // Whole floats too: a trailing value the count does not cover is not part of the tensor.
        for extra in [[0], [1, 2, 3], [0, 0, 0x80, 0x3F], [UInt8](repeating: 0xFF, count: 64)] as [[UInt8]] {
            let longer = Frame(kind: full.kind, generation: full.generation, payload: full.payload + extra)
            expectWireError(.trailingBytes, "\(message.sampleKind) + \(extra.count)") { () throws(WireError) in try DataMessage(frame: longer) }
        }
    }

    @Test func aTensorWhoseShapeDisagreesWithItsValuesIsRefused() throws {
        let cases: [(UInt32, UInt32, Int)] = [
            (2, 3, 5), (2, 3, 7), (3, 2, 0), (0, 5, 1), (5, 0, 1), (1, 1, 0), (1, 1, 2),
            // rows × columns must not wrap: UInt32.max² is not 1 (mod 2^32), nor 0 (mod 2^64).
            (.max, .max, 1), (0x1_0000, 0x1_0000, 0), (0x1_0000, 0x1_0001, 0x1_0000), (.max, 2, 0),
        ]
        for (rows, columns, count) in cases {
            let bytes = tensorPayload(rows: rows, columns: columns, values: [Float](repeating: 1, count: count))
            for kind in [DataMessage.Kind.activation, .gradient] {
                let error = expectWireError(.invalidValue, "\(kind) \(rows)×\(columns) with \(count)") { () throws(WireError) in
                    try DataMessage(frame: dataFrame(kind, bytes))
                }
                #expect(error?.message.contains("\(rows)×\(columns)") == true)
            }
        }
        // The same shapes with the right number of values decode.
        for (rows, columns) in [(2, 3), (0, 5), (5, 0), (1, 1), (0, .max), (.max, 0)] as [(UInt32, UInt32)] {
            let bytes = tensorPayload(rows: rows, columns: columns, values: [Float](repeating: 1, count: Int(rows) * Int(columns)))
            #expect(throws: Never.self, "\(rows)×\(columns)") { try DataMessage(frame: dataFrame(.activation, bytes)) }
        }
    }

    @Test func anUnknownAllReducePhaseIsRefused() throws {
        for phase: UInt8 in [0, 3, 0x7F, 0x80, 0xFF] {
            let error = expectWireError(.invalidValue, "phase \(phase)") { () throws(WireError) in
                try DataMessage(frame: dataFrame(.ring, ringPayload(phase: phase)))
            }
            #expect(error?.message.contains("\(phase)") == true)
        }
        #expect(try DataMessage(frame: dataFrame(.ring, ringPayload(phase: 1))) == .ring(step: 1, RingChunk(phase: .reduceScatter, round: 0, offset: 0, values: [1])))
        #expect(try DataMessage(frame: dataFrame(.ring, ringPayload(phase: 2))) == .ring(step: 1, RingChunk(phase: .allGather, round: 0, offset: 0, values: [1])))
    }

    @Test func anOutOfRangeAllReduceOffsetIsRefused() throws {
        let largest = UInt64(Int32.max) * 16
        for offset in [largest + 1, UInt64(Int64.max), 1 << 63, .max] {
            expectWireError(.invalidValue, "offset \(offset)") { () throws(WireError) in
                try DataMessage(frame: dataFrame(.ring, ringPayload(offset: offset)))
            }
        }
        let edge = dataFrame(.ring, ringPayload(round: .max, offset: largest))
        let decoded = try DataMessage(frame: edge)
        #expect(decoded == .ring(step: 1, RingChunk(phase: .reduceScatter, round: Int(UInt32.max), offset: Int(largest), values: [1])))
        #expect(decoded.frame(generation: edge.generation) == edge)
    }

    @Test func anUnknownKindIsRefused() {
        for kind: UInt8 in [0, 1, 48, 54, 63, 71, 72, 0x80, 0xFF] {
            for body in [[], ringPayload(), tensorPayload(rows: 1, columns: 1, values: [1])] as [[UInt8]] {
                let error = expectWireError(.unknownMessageKind, "kind \(kind)") { () throws(WireError) in
                    try DataMessage(frame: Frame(kind: kind, generation: 1, payload: body))
                }
                #expect(error?.message.contains("\(kind)") == true)
            }
        }
    }

    /// A float count is checked against the bytes left before anything is read or allocated.
    @Test func aFloatCountLargerThanTheRemainingBytesIsRefused() {
        let header = payload { $0.write(UInt64(1)); $0.write(UInt32(0)); $0.write(UInt32(1)); $0.write(UInt32(3)) }
        let cases: [(String, UInt32, Int)] = [
            ("3 values, 11 bytes", 3, 11),
            ("3 values, 0 bytes", 3, 0),
            ("4 values, 12 bytes", 4, 12),
            ("2^30 values, 16 bytes", 1 << 30, 16),
            ("UInt32.max values, 8 bytes", .max, 8),
            ("UInt32.max values, 0 bytes", .max, 0),
        ]
        for (what, count, byteCount) in cases {
            let bytes = header + payload { $0.write(count) } + [UInt8](repeating: 0x3F, count: byteCount)
            let error = expectWireError(.truncated, "\(what)") { () throws(WireError) in try DataMessage(frame: dataFrame(.activation, bytes)) }
            #expect(error?.message.contains("\(count)") == true, "\(what)")
            let ring = payload { $0.write(UInt64(1)); $0.write(UInt8(1)); $0.write(UInt32(0)); $0.write(UInt64(0)); $0.write(count) }
                + [UInt8](repeating: 0x3F, count: byteCount)
            expectWireError(.truncated, "ring: \(what)") { () throws(WireError) in try DataMessage(frame: dataFrame(.ring, ring)) }
        }
        // Whole floats that do fit, but fewer bytes than the count says, are the same thing.
        var reader = WireReader(payload { $0.write(count: 2) } + littleEndianBytes(1) + [0, 0, 0x80])
        expectWireError(.truncated) { () throws(WireError) in try reader.readFloats() }
    }

    @Test func aTruncatedFloatPayloadIsRefused() throws {
        let full = tensorPayload(rows: 2, columns: 2, values: [1, 2, 3, 4])
        for missing in 1...16 {
            expectWireError(.truncated, "\(missing) bytes missing") { () throws(WireError) in
                try DataMessage(frame: dataFrame(.gradient, Array(full.dropLast(missing))))
            }
        }
        // A frame cut by the frame decoder never reaches the message decoder.
        var decoder = FrameDecoder(maximumFrameSize: DataMessage.maximumFrameSize)
        decoder.append(dataFrame(.gradient, full).encoded().dropLast(1))
        #expect(try decoder.next() == nil)
    }

    /// The ~100 KB replies are too large to cut at every byte: cut them at every byte near each
    /// field boundary, and at random points in between.
    @Test func truncationsOfALargeStateReplyAreRefusedAsTruncated() {
        let seed = TestSeed.make("DataMessage large state reply truncation")
        var rng = SplitMix64(seed: seed)
        for message in DataSamples.all where message.sampleKind == .stateReply {
            let full = message.frame(generation: 3)
            guard full.payload.count > 4_096 else { continue }
            guard case .stateReply(_, _, let layers) = message else { continue }
            var boundaries = [0, 12, 16]
            for layer in layers { boundaries.append(boundaries.last! + 4 + layer.count) }
            var cuts = Set(boundaries.flatMap { ($0 - 6)...($0 + 6) }.filter { $0 >= 0 && $0 < full.payload.count })
            for _ in 0..<200 { cuts.insert(rng.below(full.payload.count)) }
            for length in cuts.sorted() {
                let cut = Frame(kind: full.kind, generation: full.generation, payload: Array(full.payload[..<length]))
                expectWireError(.truncated, "cut to \(length) of \(full.payload.count), seed \(seed)") { () throws(WireError) in
                    try DataMessage(frame: cut)
                }
            }
        }
    }

    /// Every layer takes at least its 4-byte length: a layer count the bytes left cannot hold is
    /// refused before any layer is read or allocated.
    @Test func aLayerCountTheBytesCannotHoldIsTruncated() throws {
        let header = payload { $0.write(UInt32(1)); $0.write(UInt64(9)) }
        let cases: [(UInt32, [UInt8])] = [
            (1, []),
            (2, payload { $0.write(bytes: [UInt8]()) }),                    // 4 bytes: one empty layer
            (3, payload { $0.write(bytes: [UInt8]()); $0.write(bytes: [UInt8]()) }),
            (1_000, payload { $0.write(bytes: [1, 2, 3]) }),
            (0x4000_0000, [UInt8](repeating: 0, count: 64)),
            (.max, [UInt8](repeating: 0, count: 64)),
            (.max, []),
        ]
        for (count, rest) in cases {
            let bytes = header + payload { $0.write(count) } + rest
            let error = expectWireError(.truncated, "\(count) layers in \(rest.count) bytes") { () throws(WireError) in
                try DataMessage(frame: dataFrame(.stateReply, bytes))
            }
            #expect(error?.message.contains("\(count)") == true, "\(count): \(String(describing: error))")
        }
        // Exactly 4 bytes per layer: that many empty layers decode.
        let empties = header + payload { $0.write(UInt32(16)) } + [UInt8](repeating: 0, count: 64)
        #expect(try DataMessage(frame: dataFrame(.stateReply, empties)) == .stateReply(stage: 1, step: 9, layers: [[UInt8]](repeating: [], count: 16)))
        // A count below the layers that follow leaves trailing bytes.
        let extra = header + payload { $0.write(UInt32(1)); $0.write(bytes: [1]); $0.write(bytes: [2]) }
        expectWireError(.trailingBytes) { () throws(WireError) in try DataMessage(frame: dataFrame(.stateReply, extra)) }
    }

    /// A layer whose length runs past the end of the message is truncated; a length over the
    /// largest data-plane frame is refused from the length alone, like any field over its limit.
    @Test func aLayerLengthPastTheEndIsRefused() throws {
        let header = payload { $0.write(UInt32(1)); $0.write(UInt64(9)) }
        let cases: [(String, [UInt8])] = [
            ("1 layer of 10, 6 bytes", payload { $0.write(count: 1); $0.write(UInt32(10)) } + [1, 2, 3, 4, 5, 6]),
            ("1 layer of 1, 0 bytes", payload { $0.write(count: 1); $0.write(UInt32(1)) }),
            ("second layer of 100, 3 bytes", payload { $0.write(count: 2); $0.write(bytes: [7]); $0.write(UInt32(100)) } + [1, 2, 3]),
            ("2 layers, the first eats the second's length", payload { $0.write(count: 2); $0.write(UInt32(4)); $0.write(bytes: [7, 8]) }),
            ("a layer of the largest frame size", payload { $0.write(count: 1); $0.write(UInt32(DataMessage.maximumFrameSize)) } + [0]),
        ]
        for (what, rest) in cases {
            expectWireError(.truncated, "\(what)") { () throws(WireError) in try DataMessage(frame: dataFrame(.stateReply, header + rest)) }
        }
        for length in [UInt32(DataMessage.maximumFrameSize) + 1, 0x7FFF_FFFF, .max] {
            let bytes = header + payload { $0.write(count: 1); $0.write(length) } + [0, 0, 0, 0]
            let error = expectWireError(.invalidValue, "length \(length)") { () throws(WireError) in try DataMessage(frame: dataFrame(.stateReply, bytes)) }
            #expect(error?.message.contains("\(length)") == true)
        }
    }

    @Test func aStateRequestIsExactlyTwelveBytes() throws {
        let body = payload { $0.write(UInt32(2)); $0.write(UInt64(5)) }
        #expect(try DataMessage(frame: dataFrame(.stateRequest, body)) == .stateRequest(stage: 2, step: 5))
        for length in 0..<12 {
            expectWireError(.truncated, "\(length) bytes") { () throws(WireError) in try DataMessage(frame: dataFrame(.stateRequest, Array(body.prefix(length)))) }
        }
        // A reply's body is not a request, nor a request's a reply.
        expectWireError(.trailingBytes) { () throws(WireError) in
            try DataMessage(frame: dataFrame(.stateRequest, DataMessage.stateReply(stage: 2, step: 5, layers: []).frame(generation: 1).payload))
        }
        expectWireError(.truncated) { () throws(WireError) in try DataMessage(frame: dataFrame(.stateReply, body)) }
    }

    @Test func helloCarriesNoPayload() throws {
        #expect(try DataMessage(frame: dataFrame(.hello, [])) == .hello)
        for extra in [[0], [64], [UInt8](repeating: 0, count: 25)] as [[UInt8]] {
            expectWireError(.trailingBytes) { () throws(WireError) in try DataMessage(frame: dataFrame(.hello, extra)) }
        }
    }
}
