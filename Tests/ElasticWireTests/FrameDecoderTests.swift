import ElasticTestSupport
import ElasticCore
import ElasticWire
import Testing

@Suite("FrameDecoder streaming")
struct FrameDecoderStreamingTests {
    /// Every sample at a few generations, in one stream.
    static let frames: [Frame] = Samples.all.enumerated().map { index, message in
        message.frame(generation: Samples.generations[index % Samples.generations.count])
    }
    static let stream: [UInt8] = frames.flatMap { $0.encoded() }

    @Test func eachFrameSplitAtEveryByteBoundaryDecodesTheSame() throws {
        for frame in Self.frames {
            let bytes = frame.encoded()
            for split in 0...bytes.count {
                var decoder = FrameDecoder()
                decoder.append(bytes[..<split])
                if split < bytes.count {
                    #expect(try decoder.next() == nil, "split \(split) of \(bytes.count)")
                    #expect(decoder.bufferedByteCount == split)
                }
                decoder.append(bytes[split...])
                #expect(try decoder.next() == frame, "split \(split) of \(bytes.count)")
                #expect(try decoder.next() == nil)
                #expect(decoder.bufferedByteCount == 0)
            }
        }
    }

    @Test func aStreamFedOneByteAtATimeYieldsEveryFrameInOrder() throws {
        var decoder = FrameDecoder()
        var decoded: [Frame] = []
        for byte in Self.stream {
            decoder.append(CollectionOfOne(byte))
            while let frame = try decoder.next() { decoded.append(frame) }
        }
        #expect(decoded == Self.frames)
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func aStreamSplitInTwoAtEveryByteBoundaryYieldsEveryFrame() throws {
        let stream = Self.stream
        for split in 0...stream.count {
            var decoder = FrameDecoder()
            var decoded: [Frame] = []
            decoder.append(stream[..<split])
            while let frame = try decoder.next() { decoded.append(frame) }
            decoder.append(stream[split...])
            while let frame = try decoder.next() { decoded.append(frame) }
            if decoded != Self.frames {
                Issue.record("split at \(split) of \(stream.count): decoded \(decoded.count) frames")
                return
            }
        }
    }

    @Test func concatenatedFramesInOneAppendDecodeLikeSeparateOnes() throws {
        #expect(try decodeFrames(Self.stream) == Self.frames)
        let messages = try decodeFrames(Self.stream).map { frame throws(WireError) in try ControlMessage(frame: frame) }
        #expect(messages == Samples.all)
    }

    @Test func randomChunkingWithInterleavedPullsYieldsEveryFrame() throws {
        let seed = TestSeed.make("FrameDecoder random chunking")
        var rng = SplitMix64(seed: seed)
        let stream = Self.stream + Self.stream
        for round in 0..<200 {
            var decoder = FrameDecoder()
            var decoded: [Frame] = []
            var offset = 0
            while offset < stream.count {
                let size = min(stream.count - offset, [1, 2, 3, 13, 14, 15, 64, 500].randomElement(using: &rng)! + rng.below(3))
                decoder.append(stream[offset..<offset + size])
                offset += size
                // Pull sometimes one frame, sometimes all, sometimes none.
                switch rng.below(3) {
                case 0: if let frame = try decoder.next() { decoded.append(frame) }
                case 1: while let frame = try decoder.next() { decoded.append(frame) }
                default: break
                }
            }
            while let frame = try decoder.next() { decoded.append(frame) }
            #expect(decoded == Self.frames + Self.frames, "seed \(seed), round \(round)")
            #expect(decoder.bufferedByteCount == 0)
        }
    }

    @Test func aLongStreamThroughOneDecoderNeverLosesItsPlace() throws {
        var decoder = FrameDecoder(maximumFrameSize: 4096)
        let bytes = ControlMessage.heartbeat(incarnation: 3).frame(generation: 4).encoded()
        var count = 0
        for round in 0..<5_000 {
            // Leave half a frame behind every time, so the buffer never empties on its own.
            decoder.append(bytes[(round == 0 ? 0 : 11)...])
            decoder.append(bytes[..<11])
            while let frame = try decoder.next() {
                #expect(frame.kind == ControlMessage.Kind.heartbeat.rawValue)
                count += 1
            }
            #expect(decoder.bufferedByteCount == 11)
        }
        #expect(count == 5_000)
    }

    @Test func framesUpToTheMaximumAreAccepted() throws {
        let maximum = 1_000
        let exact = Frame(kind: ControlMessage.Kind.caBundle.rawValue, generation: 1, payload: [UInt8](repeating: 7, count: maximum - Frame.headerSize))
        #expect(exact.encoded().count == maximum)
        #expect(try decodeFrames(exact.encoded(), maximumFrameSize: maximum) == [exact])

        // The default maximum lets through a real certificate bundle.
        let bundle = ControlMessage.caBundle(certificateDER: [UInt8](repeating: 0x30, count: 60 << 10))
        let decoded = try decodeFrames(bundle.frame(generation: 2).encoded())
        #expect(try decoded.map { frame throws(WireError) in try ControlMessage(frame: frame) } == [bundle])

        // The smallest frame is a bare header.
        #expect(try decodeFrames(ControlMessage.caRequest.frame(generation: 0).encoded(), maximumFrameSize: Frame.headerSize).count == 1)
    }
}

@Suite("FrameDecoder rejections")
struct FrameDecoderRejectionTests {
    func lengthField(_ length: UInt32) -> [UInt8] { payload { $0.write(length) } }

    @Test func anOversizedFrameIsRefusedFromItsLengthFieldAlone() throws {
        var decoder = FrameDecoder(maximumFrameSize: 1_000)
        decoder.append(lengthField(997))  // 4 + 997 = 1001 bytes
        let error = expectWireError(.frameTooLarge) { () throws(WireError) in try decoder.next() }
        #expect(error?.message.contains("1001") == true)
        // The error is final: asking again gives it again.
        expectWireError(.frameTooLarge) { () throws(WireError) in try decoder.next() }

        for length in [UInt32.max, UInt32(Int32.max), UInt32(Frame.defaultMaximumSize - 3)] {
            var large = FrameDecoder()
            large.append(lengthField(length))
            expectWireError(.frameTooLarge, "length \(length)") { () throws(WireError) in try large.next() }
        }
        var atLimit = FrameDecoder()
        atLimit.append(lengthField(UInt32(Frame.defaultMaximumSize - 4)))
        #expect(try atLimit.next() == nil, "a frame of exactly the maximum waits for its bytes")
    }

    @Test func aLengthShorterThanTheHeaderIsRefused() {
        for length in [0, 1, 9] as [UInt32] {
            var decoder = FrameDecoder()
            decoder.append(lengthField(length) + [UInt8](repeating: 1, count: 20))
            expectWireError(.frameTooShort, "length \(length)") { () throws(WireError) in try decoder.next() }
        }
    }

    @Test func aWrongVersionIsRefusedAsSoonAsItsByteArrives() throws {
        for version: UInt8 in [0, 2, 0xFF] {
            var decoder = FrameDecoder()
            decoder.append(lengthField(18))
            #expect(try decoder.next() == nil)
            decoder.append([version])
            let error = expectWireError(.unsupportedVersion, "version \(version)") { () throws(WireError) in try decoder.next() }
            #expect(error?.message.contains("\(version)") == true)
        }
        // Also inside a stream, after a good frame.
        var decoder = FrameDecoder()
        decoder.append(ControlMessage.heartbeatAck.frame(generation: 1).encoded() + lengthField(10) + [2])
        #expect(try decoder.next() != nil)
        expectWireError(.unsupportedVersion) { () throws(WireError) in try decoder.next() }
    }

    @Test func fewerThanFourBytesAreJustIncomplete() throws {
        for count in 0..<4 {
            var decoder = FrameDecoder(maximumFrameSize: Frame.headerSize)
            decoder.append([UInt8](repeating: 0xFF, count: count))
            #expect(try decoder.next() == nil)
        }
    }

    @Test func anUnknownKindPassesFramingButIsRefusedByTheMessageDecoder() throws {
        let known = Set(ControlMessage.Kind.allCases.map(\.rawValue))
        for kind in UInt8.min...UInt8.max where !known.contains(kind) {
            let bytes = Frame(kind: kind, generation: 9, payload: [1, 2, 3]).encoded()
            let frames = try decodeFrames(bytes)
            #expect(frames.count == 1)
            expectWireError(.unknownMessageKind, "kind \(kind)") { () throws(WireError) in try ControlMessage(frame: frames[0]) }
        }
    }
}
