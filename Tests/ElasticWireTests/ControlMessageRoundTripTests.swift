import ElasticCore
import ElasticWire
import Testing

@Suite("ControlMessage round trips")
struct ControlMessageRoundTripTests {
    @Test func samplesCoverEveryKind() {
        let kinds = Set(Samples.all.map(\.kind))
        #expect(kinds == Set(ControlMessage.Kind.allCases), "missing: \(Set(ControlMessage.Kind.allCases).subtracting(kinds))")
        #expect(Set(Samples.all.compactMap { if case .refused(let r) = $0 { r.code } else { nil } }) == Set(Refused.Code.allCases))
        #expect(Set(Samples.memberStatuses.map(\.state)) == Set(Membership.State.allCases))
    }

    @Test(arguments: Samples.all)
    func roundTripsThroughTheDecoder(message: ControlMessage) throws {
        for generation in Samples.generations {
            let frame = message.frame(generation: generation)
            #expect(frame.kind == message.kind.rawValue)
            #expect(frame.generation == generation)
            let bytes = frame.encoded()
            #expect(bytes.count == Frame.headerSize + frame.payload.count)

            let frames = try decodeFrames(bytes)
            #expect(frames == [frame])
            let decodedFrame = try #require(frames.first)
            #expect(decodedFrame.generation == generation)
            #expect(try ControlMessage(frame: decodedFrame) == message)
        }
    }

    @Test func kindNumbersAreStable() {
        // These bytes are the protocol: renumbering a kind breaks every deployed peer.
        let expected: [(ControlMessage.Kind, UInt8)] = [
            (.hello, 1), (.welcome, 2), (.heartbeat, 3), (.heartbeatAck, 4), (.view, 5), (.leave, 6), (.refused, 7),
            (.caRequest, 16), (.caBundle, 17), (.bootstrapRequest, 18), (.bootstrapGranted, 19),
            (.statusRequest, 32), (.statusReply, 33), (.tokenCreate, 34), (.tokenCreated, 35), (.tokenListRequest, 36),
            (.tokenList, 37), (.tokenRevoke, 38), (.done, 39),
        ]
        for (kind, raw) in expected { #expect(kind.rawValue == raw, "\(kind)") }
        #expect(expected.count == ControlMessage.Kind.allCases.count)
        let codes: [(Refused.Code, UInt16)] = [
            (.fenced, 1), (.staleGeneration, 2), (.futureGeneration, 3), (.certificateRequired, 4), (.badToken, 5), (.badRequest, 6),
            (.nameInUse, 7), (.notAuthorized, 8), (.protocolError, 9), (.internalError, 10), (.shuttingDown, 11),
        ]
        for (code, raw) in codes { #expect(code.rawValue == raw, "\(code)") }
        #expect(codes.count == Refused.Code.allCases.count)
    }

    @Test func heartbeatBytesAreExactlyAsDocumented() {
        let bytes = ControlMessage.heartbeat(incarnation: 7).frame(generation: 0x0102_0304_0506_0708).encoded()
        #expect(bytes == [
            0, 0, 0, 18,                // length: 10 bytes of header rest + 8 of payload
            1,                          // version
            3,                          // kind: heartbeat
            1, 2, 3, 4, 5, 6, 7, 8,     // generation, big-endian
            0, 0, 0, 0, 0, 0, 0, 7,     // incarnation
        ])
        #expect(ControlMessage.heartbeatAck.frame(generation: 1).encoded() == [0, 0, 0, 10, 1, 4, 0, 0, 0, 0, 0, 0, 0, 1])
    }

    @Test func helloBytesAreExactlyAsDocumented() {
        let hello = ControlMessage.hello(Hello(resuming: 2, capacity: Capacity(cores: 4, memoryBytes: 256, gflops: 1.5), softwareVersion: "v1"))
        #expect(hello.frame(generation: 0).payload == [
            1, 0, 0, 0, 0, 0, 0, 0, 2,                      // resuming: present, 2
            0, 0, 0, 4,                                     // cores
            0, 0, 0, 0, 0, 0, 1, 0,                         // memory
            0x3F, 0xF8, 0, 0, 0, 0, 0, 0,                   // 1.5 as an IEEE 754 double
            0, 0, 0, 2, 0x76, 0x31,                         // "v1"
        ])
        let fresh = ControlMessage.hello(Hello(resuming: nil, capacity: Capacity(cores: 4, memoryBytes: 256, gflops: 1.5), softwareVersion: "v1"))
        #expect(fresh.frame(generation: 0).payload.first == 0)
        #expect(fresh.frame(generation: 0).payload.count == 1 + 20 + 6)
    }

    @Test func durationsTravelInWholeMilliseconds() throws {
        let welcome = ControlMessage.welcome(Welcome(node: "w", incarnation: 1, heartbeatInterval: .microseconds(1_500_900), deadTimeout: .nanoseconds(2_000_999_999)))
        let decoded = try ControlMessage(frame: welcome.frame(generation: 1))
        #expect(decoded == .welcome(Welcome(node: "w", incarnation: 1, heartbeatInterval: .milliseconds(1_500), deadTimeout: .milliseconds(2_000))))

        let create = ControlMessage.tokenCreate(TokenCreate(ttl: .milliseconds(90_999), uses: nil, description: ""))
        #expect(try ControlMessage(frame: create.frame(generation: 1)) == .tokenCreate(TokenCreate(ttl: .seconds(90), uses: nil, description: "")))
    }

    @Test
    func aSubMillisecondHeartbeatIntervalStillMakesADecodableWelcome() throws {
        let welcome = ControlMessage.welcome(Welcome(node: "w", incarnation: 1, heartbeatInterval: .microseconds(500), deadTimeout: .seconds(2)))
        let decoded = try ControlMessage(frame: welcome.frame(generation: 1))
        guard case .welcome(let value) = decoded else {
            Issue.record("decoded \(decoded)")
            return
        }
        #expect(value.heartbeatInterval > .zero)
    }

    /// Durations beyond what a `Duration` holds in nanoseconds are refused when decoding, so
    /// everything that decodes encodes back to the same bytes.
    @Test
    func decodedDurationsReencodeToTheSameMessage() throws {
        let status = payload {
            $0.write(UInt64(6))
            $0.write(UInt64(1) << 60)   // uptime in ms: decodes, but is larger than Int64.max nanoseconds
            $0.write(UInt64(500))
            $0.write(UInt64(2_000))
            $0.write(count: 0)
        }
        let create = payload {
            $0.write(optional: UInt64(1) << 40)  // ttl in seconds
            $0.write(optional: UInt32?.none)
            $0.write("")
        }
        for (kind, bytes) in [(ControlMessage.Kind.statusReply, status), (.tokenCreate, create)] {
            #expect(throws: WireError.self, "\(kind)") { try ControlMessage(frame: frame(kind, bytes)) }
        }
        let largest = payload {
            $0.write(UInt64(6))
            $0.write(UInt64(Int64.max / 1_000_000))
            $0.write(UInt64(500))
            $0.write(UInt64(2_000))
            $0.write(count: 0)
        }
        let message = try ControlMessage(frame: frame(.statusReply, largest))
        #expect(message.frame(generation: 5).payload == largest)
    }
}

@Suite("WireWriter and WireReader")
struct WireCodingTests {
    @Test func integersAreBigEndian() {
        var writer = WireWriter()
        writer.write(UInt8(0xAB))
        writer.write(UInt16(0x0102))
        writer.write(UInt32(0x0304_0506))
        writer.write(UInt64(0x0708_090A_0B0C_0D0E))
        writer.write(Int64(-2))
        writer.write(true)
        writer.write(false)
        #expect(writer.bytes == [0xAB, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 1, 0])
    }

    @Test func valuesRoundTripAtTheirExtremes() throws {
        var writer = WireWriter()
        let u64s: [UInt64] = [0, 1, .max, 0x8000_0000_0000_0000]
        let i64s: [Int64] = [0, -1, .min, .max]
        let doubles: [Double] = [0, -0.0, .infinity, -.infinity, .nan, .leastNonzeroMagnitude, -1.5]
        for v in u64s { writer.write(v) }
        for v in i64s { writer.write(v) }
        for v in doubles { writer.write(v) }
        writer.write(UInt16.max)
        writer.write(UInt32.max)
        writer.write("héllo ✓")
        writer.write(bytes: [0, 1, 2])
        writer.write(bytes: [UInt8]())

        var reader = WireReader(writer.bytes)
        for v in u64s { #expect(try reader.read(UInt64.self) == v) }
        for v in i64s { #expect(try reader.read(Int64.self) == v) }
        for v in doubles { #expect(try reader.read(Double.self).bitPattern == v.bitPattern) }
        #expect(try reader.read(UInt16.self) == .max)
        #expect(try reader.read(UInt32.self) == .max)
        #expect(try reader.readString() == "héllo ✓")
        #expect(try reader.readBytes() == [0, 1, 2])
        #expect(try reader.readBytes() == [])
        #expect(reader.remaining == 0)
        try reader.expectEnd()
    }

    @Test func readerWorksOnASliceThatDoesNotStartAtZero() throws {
        let bytes: [UInt8] = [0xEE, 0xEE, 0xEE, 0, 0, 0, 2, 0x68, 0x69, 0x01, 0xEE]
        var reader = WireReader(bytes[3..<10])
        #expect(reader.remaining == 7)
        #expect(try reader.readString() == "hi")
        #expect(try reader.read(Bool.self) == true)
        #expect(reader.remaining == 0)
        try reader.expectEnd()
        expectWireError(.truncated) { () throws(WireError) in try reader.read(UInt8.self) }
    }

    @Test func readsPastTheEndThrowTruncated() {
        var reader = WireReader([0, 0, 0])
        expectWireError(.truncated) { () throws(WireError) in try reader.read(UInt32.self) }
        expectWireError(.truncated) { () throws(WireError) in try reader.read(UInt64.self) }
        var short = WireReader([0, 0, 0, 5, 1, 2])
        expectWireError(.truncated) { () throws(WireError) in try short.readBytes() }
        var empty = WireReader([UInt8]())
        expectWireError(.truncated) { () throws(WireError) in try empty.read(Bool.self) }
    }

    @Test func limitsAndCountsAreCheckedBeforeReading() throws {
        var long = WireReader(payload { $0.write(String(repeating: "x", count: 65)) })
        expectWireError(.invalidValue) { () throws(WireError) in try long.readString(limit: 64) }
        var exact = WireReader(payload { $0.write(String(repeating: "x", count: 64)) })
        #expect(try exact.readString(limit: 64).count == 64)

        // A count the remaining bytes cannot hold is refused, whatever the items are.
        var counted = WireReader(payload { $0.write(count: 3); $0.write(UInt64(0)); $0.write(UInt64(0)) })
        expectWireError(.truncated) { () throws(WireError) in try counted.readCount(minimumItemSize: 8) }
        var fits = WireReader(payload { $0.write(count: 2); $0.write(UInt64(0)); $0.write(UInt64(0)) })
        #expect(try fits.readCount(minimumItemSize: 8) == 2)
        var huge = WireReader(payload { $0.write(UInt32.max) })
        expectWireError(.truncated) { () throws(WireError) in try huge.readCount(minimumItemSize: 0) }
    }

    @Test func booleansAreZeroOrOne() throws {
        var reader = WireReader([0, 1, 2, 0xFF])
        #expect(try reader.read(Bool.self) == false)
        #expect(try reader.read(Bool.self) == true)
        expectWireError(.invalidValue) { () throws(WireError) in try reader.read(Bool.self) }
    }

    @Test func expectEndRefusesLeftovers() {
        let reader = WireReader([1, 2])
        expectWireError(.trailingBytes) { () throws(WireError) in try reader.expectEnd() }
    }

    @Test func errorsDescribeThemselves() {
        let error = WireError(.frameTooLarge, "frame of 9 bytes exceeds the maximum of 8")
        #expect(error.description == "frameTooLarge: frame of 9 bytes exceeds the maximum of 8")
        #expect(WireError.Code.truncated != WireError.Code.trailingBytes)
    }
}
